"""the created_at index is unused

Revision ID: c016
Revises: c000
"""

from alembic import op

revision = "c016"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"require-concurrent-index-deletion"}


def upgrade():
    op.drop_index("ix_orders_created_at", table_name="orders")


def downgrade():
    op.create_index("ix_orders_created_at", "orders", ["created_at"])
