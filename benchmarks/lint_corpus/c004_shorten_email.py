"""accounts.email down to 50 characters

Revision ID: c004
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c004"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"changing-column-type"}


def upgrade():
    op.alter_column("accounts", "email", type_=sa.String(50), existing_type=sa.String(100))


def downgrade():
    pass
