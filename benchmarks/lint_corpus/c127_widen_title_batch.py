"""products.title up to 200 characters, in batch mode

Revision ID: c127
Revises: c000
"""

import sqlalchemy as sa
from alembic import op

revision = "c127"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    with op.batch_alter_table("products") as batch_op:
        batch_op.alter_column("title", type_=sa.String(200), existing_type=sa.String(80), existing_nullable=False)


def downgrade():
    pass
