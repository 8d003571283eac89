"""backfill accounts.status, then NOT NULL, in SQL

Revision ID: c032
Revises: c000
"""

from alembic import op

revision = "c032"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"setting-not-nullable-field"}


def upgrade():
    op.execute("UPDATE accounts SET status = 'active' WHERE status IS NULL")
    op.execute("ALTER TABLE accounts ALTER COLUMN status SET NOT NULL")


def downgrade():
    pass
