"""drop events, in SQL

Revision ID: c021
Revises: c000
"""

from alembic import op

revision = "c021"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"ban-drop-table"}


def upgrade():
    op.execute("DROP TABLE events")


def downgrade():
    pass
