"""unique sku the safe way: index concurrently, then the constraint

Revision ID: c126
Revises: c000
"""

from alembic import op

revision = "c126"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    with op.get_context().autocommit_block():
        op.execute("CREATE UNIQUE INDEX CONCURRENTLY uq_products_sku ON products (sku)")
    op.execute("ALTER TABLE products ADD CONSTRAINT uq_products_sku UNIQUE USING INDEX uq_products_sku")


def downgrade():
    op.execute("ALTER TABLE products DROP CONSTRAINT uq_products_sku")
