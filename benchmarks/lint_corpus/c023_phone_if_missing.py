"""accounts.phone, required, unless an older script added it

Revision ID: c023
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c023"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"adding-not-nullable-field"}


def upgrade():
    bind = op.get_bind()
    columns = {column["name"] for column in sa.inspect(bind).get_columns("accounts")}
    if "phone" not in columns:
        op.add_column("accounts", sa.Column("phone", sa.String(30), nullable=False))


def downgrade():
    op.drop_column("accounts", "phone")
