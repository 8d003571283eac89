"""accounts.public_id filled by gen_random_uuid()

Revision ID: c002
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c002"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"adding-field-with-volatile-default"}


def upgrade():
    op.add_column("accounts", sa.Column("public_id", sa.Uuid(), server_default=sa.text("gen_random_uuid()")))


def downgrade():
    op.drop_column("accounts", "public_id")
