"""index accounts.email, concurrently

Revision ID: c106
Revises: c000
"""

from alembic import op

revision = "c106"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    with op.get_context().autocommit_block():
        op.create_index("ix_accounts_email", "accounts", ["email"], postgresql_concurrently=True)


def downgrade():
    with op.get_context().autocommit_block():
        op.drop_index("ix_accounts_email", table_name="accounts", postgresql_concurrently=True)
