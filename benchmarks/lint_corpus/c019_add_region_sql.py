"""accounts.region, required, in SQL

Revision ID: c019
Revises: c000
"""

from alembic import op

revision = "c019"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"adding-not-nullable-field"}


def upgrade():
    op.execute("ALTER TABLE accounts ADD COLUMN region text NOT NULL")


def downgrade():
    op.execute("ALTER TABLE accounts DROP COLUMN region")
