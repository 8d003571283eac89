"""a scratch table for a one-off copy, dropped again

Revision ID: c111
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c111"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.create_table("scratch", sa.Column("id", sa.Integer(), primary_key=True))
    op.execute("INSERT INTO scratch (id) SELECT id FROM accounts")
    op.execute("UPDATE accounts SET status = 'active' WHERE id IN (SELECT id FROM scratch)")
    op.drop_table("scratch")


def downgrade():
    pass
