"""index orders.account_id, in SQL

Revision ID: c017
Revises: c000
"""

from alembic import op

revision = "c017"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"require-concurrent-index-creation"}


def upgrade():
    op.execute("CREATE INDEX ix_orders_account ON orders (account_id)")


def downgrade():
    op.execute("DROP INDEX ix_orders_account")
