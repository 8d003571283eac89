"""products.price as double precision, in SQL

Revision ID: c020
Revises: c000
"""

from alembic import op

revision = "c020"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"changing-column-type"}


def upgrade():
    op.execute("ALTER TABLE products ALTER COLUMN price TYPE double precision")


def downgrade():
    pass
