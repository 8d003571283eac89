"""products.sku as an integer

Revision ID: c030
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c030"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"changing-column-type"}


def upgrade():
    op.alter_column("products", "sku", type_=sa.Integer(), existing_type=sa.String(40), postgresql_using="sku::integer")


def downgrade():
    pass
