"""accounts.status NOT NULL

Revision ID: c005
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c005"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"setting-not-nullable-field"}


def upgrade():
    op.alter_column("accounts", "status", nullable=False, existing_type=sa.String(20), existing_nullable=True)


def downgrade():
    pass
