"""drop accounts.status, accepted without saying why

Revision ID: c031
Revises: c000
"""

from alembic import op

revision = "c031"
down_revision = "c000"
branch_labels = None
depends_on = None

lint_ignore = {"ban-drop-column": ""}

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"ban-drop-column", "lint-ignore-without-reason"}


def upgrade():
    op.drop_column("accounts", "status")


def downgrade():
    pass
