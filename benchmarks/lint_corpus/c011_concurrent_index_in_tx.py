"""index concurrently, forgetting the autocommit block

Revision ID: c011
Revises: c000
"""

from alembic import op

revision = "c011"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"ban-concurrent-index-creation-in-transaction"}


def upgrade():
    op.create_index("ix_orders_total", "orders", ["total"], postgresql_concurrently=True)


def downgrade():
    op.drop_index("ix_orders_total", table_name="orders")
