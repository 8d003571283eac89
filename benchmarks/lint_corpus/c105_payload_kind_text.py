"""events.kind as text

Revision ID: c105
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c105"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.alter_column("events", "kind", type_=sa.Text(), existing_type=sa.String(30), existing_nullable=False)


def downgrade():
    pass
