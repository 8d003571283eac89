"""orders.account_id to bigint

Revision ID: c003
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c003"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"changing-column-type"}


def upgrade():
    op.alter_column("orders", "account_id", type_=sa.BigInteger(), existing_type=sa.Integer())


def downgrade():
    pass
