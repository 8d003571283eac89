"""events moved to the event bus

Revision ID: c013
Revises: c000
"""

from alembic import op

revision = "c013"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"ban-drop-table"}


def upgrade():
    op.drop_table("events")


def downgrade():
    pass
