"""refunds, grown in the same revision

Revision ID: c110
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c110"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.create_table("refunds", sa.Column("id", sa.Integer(), primary_key=True))
    op.add_column("refunds", sa.Column("order_id", sa.Integer(), nullable=False))
    op.add_column("refunds", sa.Column("reason", sa.String(50)))
    op.alter_column("refunds", "reason", type_=sa.String(20), existing_type=sa.String(50))
    op.create_foreign_key("fk_refunds_order", "refunds", "orders", ["order_id"], ["id"])


def downgrade():
    op.drop_table("refunds")
