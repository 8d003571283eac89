"""accounts.nickname, optional

Revision ID: c101
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c101"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.add_column("accounts", sa.Column("nickname", sa.String(40)))


def downgrade():
    op.drop_column("accounts", "nickname")
