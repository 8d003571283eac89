"""accounts.plan, required, default free

Revision ID: c102
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c102"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.add_column("accounts", sa.Column("plan", sa.String(20), server_default="free", nullable=False))


def downgrade():
    op.drop_column("accounts", "plan")
