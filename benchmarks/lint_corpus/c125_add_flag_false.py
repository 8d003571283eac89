"""accounts.verified, required, default false

Revision ID: c125
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c125"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.add_column("accounts", sa.Column("verified", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade():
    op.drop_column("accounts", "verified")
