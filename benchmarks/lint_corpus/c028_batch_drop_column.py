"""drop products.title in batch mode

Revision ID: c028
Revises: c000
"""

from alembic import op

revision = "c028"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = {"ban-drop-column"}


def upgrade():
    with op.batch_alter_table("products") as batch_op:
        batch_op.drop_column("title")


def downgrade():
    pass
