"""orders.currency, required, written in batch mode

Revision ID: c027
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c027"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"adding-not-nullable-field"}


def upgrade():
    with op.batch_alter_table("orders") as batch_op:
        batch_op.add_column(sa.Column("currency", sa.String(3), nullable=False))


def downgrade():
    with op.batch_alter_table("orders") as batch_op:
        batch_op.drop_column("currency")
