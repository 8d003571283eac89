"""explain the orders table

Revision ID: c123
Revises: c000
"""

from alembic import op

revision = "c123"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.create_table_comment("orders", "one row per checkout")
    op.execute("COMMENT ON COLUMN orders.total IS 'in the account currency'")


def downgrade():
    pass
