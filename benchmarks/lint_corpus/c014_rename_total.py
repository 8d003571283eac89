"""orders.total becomes amount

Revision ID: c014
Revises: c000
"""

from alembic import op

revision = "c014"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"renaming-column"}


def upgrade():
    op.alter_column("orders", "total", new_column_name="amount")


def downgrade():
    op.alter_column("orders", "amount", new_column_name="total")
