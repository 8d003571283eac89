"""accounts.name up to 200 characters

Revision ID: c104
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c104"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.alter_column("accounts", "name", type_=sa.String(200), existing_type=sa.String(50), existing_nullable=False)


def downgrade():
    pass
