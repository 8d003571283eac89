"""events.account_id referencing accounts

Revision ID: c029
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c029"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"constraint-missing-not-valid"}


def upgrade():
    op.add_column(
        "events", sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id", name="fk_events_account"))
    )


def downgrade():
    op.drop_column("events", "account_id")
