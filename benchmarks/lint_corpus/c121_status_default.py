"""accounts.status defaults to active

Revision ID: c121
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c121"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.alter_column("accounts", "status", server_default="active", existing_type=sa.String(20))


def downgrade():
    pass
