"""index orders.account_id concurrently unless present

Revision ID: c118
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c118"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    indexes = {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("orders")}
    if "ix_orders_account" not in indexes:
        with op.get_context().autocommit_block():
            op.create_index("ix_orders_account", "orders", ["account_id"], postgresql_concurrently=True)


def downgrade():
    pass
