"""coupons, with their index and unique code

Revision ID: c109
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c109"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.create_table(
        "coupons",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sa.String(20), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_coupons_account", "coupons", ["account_id"])
    op.create_unique_constraint("uq_coupons_code", "coupons", ["code"])
    op.create_foreign_key("fk_coupons_account", "coupons", "accounts", ["account_id"], ["id"])


def downgrade():
    op.drop_table("coupons")
