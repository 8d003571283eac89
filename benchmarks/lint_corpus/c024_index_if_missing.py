"""index accounts.email unless a DBA made one

Revision ID: c024
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c024"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"require-concurrent-index-creation"}


def upgrade():
    indexes = {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("accounts")}
    if "ix_accounts_email" not in indexes:
        op.create_index("ix_accounts_email", "accounts", ["email"])


def downgrade():
    op.drop_index("ix_accounts_email", table_name="accounts")
