"""unique sku, in SQL

Revision ID: c010
Revises: c000
"""

from alembic import op

revision = "c010"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"disallowed-unique-constraint"}


def upgrade():
    op.execute("ALTER TABLE products ADD CONSTRAINT uq_products_sku UNIQUE (sku)")


def downgrade():
    op.execute("ALTER TABLE products DROP CONSTRAINT uq_products_sku")
