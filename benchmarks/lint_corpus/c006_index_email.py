"""index accounts.email

Revision ID: c006
Revises: c000
"""

from alembic import op

revision = "c006"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"require-concurrent-index-creation"}


def upgrade():
    op.create_index("ix_accounts_email", "accounts", ["email"])


def downgrade():
    op.drop_index("ix_accounts_email", table_name="accounts")
