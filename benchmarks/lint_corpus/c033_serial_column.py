"""events.seq as a serial

Revision ID: c033
Revises: c000
"""

from alembic import op

revision = "c033"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"adding-field-with-volatile-default"}


def upgrade():
    op.execute("ALTER TABLE events ADD COLUMN seq bigserial")


def downgrade():
    op.execute("ALTER TABLE events DROP COLUMN seq")
