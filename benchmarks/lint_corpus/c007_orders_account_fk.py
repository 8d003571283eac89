"""orders.account_id references accounts

Revision ID: c007
Revises: c000
"""

from alembic import op

revision = "c007"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"constraint-missing-not-valid"}


def upgrade():
    op.create_foreign_key("fk_orders_account", "orders", "accounts", ["account_id"], ["id"])


def downgrade():
    op.drop_constraint("fk_orders_account", "orders", type_="foreignkey")
