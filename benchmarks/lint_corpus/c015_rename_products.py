"""products becomes items

Revision ID: c015
Revises: c000
"""

from alembic import op

revision = "c015"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"renaming-table"}


def upgrade():
    op.rename_table("products", "items")


def downgrade():
    op.rename_table("items", "products")
