"""events.kind becomes type, in SQL

Revision ID: c022
Revises: c000
"""

from alembic import op

revision = "c022"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"renaming-column"}


def upgrade():
    op.execute("ALTER TABLE events RENAME COLUMN kind TO type")


def downgrade():
    op.execute("ALTER TABLE events RENAME COLUMN type TO kind")
