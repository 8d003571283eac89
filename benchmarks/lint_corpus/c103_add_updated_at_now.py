"""orders.updated_at defaulting to now()

Revision ID: c103
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c103"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.add_column(
        "orders", sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)
    )


def downgrade():
    op.drop_column("orders", "updated_at")
