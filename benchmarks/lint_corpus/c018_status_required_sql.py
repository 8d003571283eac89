"""accounts.status NOT NULL, in SQL

Revision ID: c018
Revises: c000
"""

from alembic import op

revision = "c018"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"setting-not-nullable-field"}


def upgrade():
    op.execute("ALTER TABLE accounts ALTER COLUMN status SET NOT NULL")


def downgrade():
    op.execute("ALTER TABLE accounts ALTER COLUMN status DROP NOT NULL")
