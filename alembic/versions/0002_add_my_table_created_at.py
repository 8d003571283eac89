"""add my_table.created_at

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 00:00:01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # SQLite cannot ADD COLUMN with a non-constant default such as CURRENT_TIMESTAMP: batch mode copies
    # the table (rows included) into a new one; on PostgreSQL it is a plain ALTER TABLE.
    # Existing rows get the time of the upgrade.
    with op.batch_alter_table("my_table") as batch_op:
        batch_op.add_column(
            sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("my_table") as batch_op:
        batch_op.drop_column("created_at")
