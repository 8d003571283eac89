"""accounts.name is no longer used

Revision ID: c012
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c012"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"ban-drop-column"}


def upgrade():
    op.drop_column("accounts", "name")


def downgrade():
    op.add_column("accounts", sa.Column("name", sa.String(50)))
