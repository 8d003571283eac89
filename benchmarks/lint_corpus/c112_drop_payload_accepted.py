"""drop events.payload, which release 41 stopped reading

Revision ID: c112
Revises: c000
"""

from alembic import op

revision = "c112"
down_revision = "c000"
branch_labels = None
depends_on = None

lint_ignore = {"ban-drop-column": "release 41 stopped reading events.payload; 40 is no longer deployed"}

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.drop_column("events", "payload")


def downgrade():
    pass
