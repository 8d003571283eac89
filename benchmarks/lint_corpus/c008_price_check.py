"""products.price must not be negative

Revision ID: c008
Revises: c000
"""

from alembic import op

revision = "c008"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"constraint-missing-not-valid"}


def upgrade():
    op.create_check_constraint("ck_products_price", "products", "price >= 0")


def downgrade():
    op.drop_constraint("ck_products_price", "products", type_="check")
