"""accounts.nickname unless present

Revision ID: c117
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c117"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("accounts")}
    if "nickname" not in columns:
        op.add_column("accounts", sa.Column("nickname", sa.String(40)))


def downgrade():
    pass
