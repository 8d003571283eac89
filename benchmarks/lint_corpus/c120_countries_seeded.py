"""countries, seeded

Revision ID: c120
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c120"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    countries = op.create_table(
        "countries",
        sa.Column("code", sa.String(2), primary_key=True),
        sa.Column("name", sa.String(80), nullable=False),
    )
    op.bulk_insert(countries, [{"code": "NL", "name": "Netherlands"}, {"code": "FR", "name": "France"}])


def downgrade():
    op.drop_table("countries")
