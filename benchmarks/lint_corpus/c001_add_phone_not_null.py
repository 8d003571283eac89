"""accounts.phone, required

Revision ID: c001
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c001"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"adding-not-nullable-field"}


def upgrade():
    op.add_column("accounts", sa.Column("phone", sa.String(30), nullable=False))


def downgrade():
    op.drop_column("accounts", "phone")
