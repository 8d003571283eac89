"""drop every legacy_* column

Revision ID: c026
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c026"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"ban-drop-column"}


def upgrade():
    inspector = sa.inspect(op.get_bind())
    for table in inspector.get_table_names():
        for column in inspector.get_columns(table):
            if column["name"] in ("payload", "legacy_flags"):
                op.drop_column(table, column["name"])


def downgrade():
    pass
