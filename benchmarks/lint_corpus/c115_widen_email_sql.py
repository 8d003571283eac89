"""accounts.email up to 255 characters, in SQL

Revision ID: c115
Revises: c000
"""

from alembic import op

revision = "c115"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.execute("ALTER TABLE accounts ALTER COLUMN email TYPE varchar(255)")


def downgrade():
    pass
