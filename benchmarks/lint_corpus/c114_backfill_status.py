"""backfill accounts.status

Revision ID: c114
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c114"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.execute(sa.text("UPDATE accounts SET status = :status WHERE status IS NULL").bindparams(status="active"))
    op.execute("SELECT count(*) FROM accounts WHERE status IS NULL")


def downgrade():
    pass
