"""one account per email

Revision ID: c009
Revises: c000
"""

from alembic import op

revision = "c009"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"disallowed-unique-constraint"}


def upgrade():
    op.create_unique_constraint("uq_accounts_email", "accounts", ["email"])


def downgrade():
    op.drop_constraint("uq_accounts_email", "accounts", type_="unique")
