"""drop the unused created_at index, concurrently

Revision ID: c119
Revises: c000
"""

from alembic import op

revision = "c119"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    with op.get_context().autocommit_block():
        op.drop_index("ix_orders_created_at", table_name="orders", postgresql_concurrently=True)


def downgrade():
    pass
