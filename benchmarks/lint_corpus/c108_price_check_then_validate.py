"""price check NOT VALID, validated without blocking writes

Revision ID: c108
Revises: c000
"""

from alembic import op

revision = "c108"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.create_check_constraint("ck_products_price", "products", "price >= 0", postgresql_not_valid=True)
    op.execute("ALTER TABLE products VALIDATE CONSTRAINT ck_products_price")


def downgrade():
    op.drop_constraint("ck_products_price", "products", type_="check")
