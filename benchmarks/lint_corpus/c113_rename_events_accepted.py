"""events becomes audit_events, accepted

Revision ID: c113
Revises: c000
"""

from alembic import op

revision = "c113"
down_revision = "c000"
branch_labels = None
depends_on = None

lint_ignore = {"renaming-table": "only the nightly job reads events, and it is paused for this deploy"}

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.rename_table("events", "audit_events")


def downgrade():
    op.rename_table("audit_events", "events")
