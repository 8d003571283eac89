"""unique email, done inline while the table is small

Revision ID: c025
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c025"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"disallowed-unique-constraint"}


def upgrade():
    rows = op.get_bind().execute(sa.text("SELECT count(*) FROM accounts")).scalar_one()
    if rows < 100_000:
        op.create_unique_constraint("uq_accounts_email", "accounts", ["email"])
    else:
        with op.get_context().autocommit_block():
            op.create_index("uq_accounts_email", "accounts", ["email"], unique=True, postgresql_concurrently=True)


def downgrade():
    pass
