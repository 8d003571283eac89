"""tags, in SQL

Revision ID: c124
Revises: c000
"""

from alembic import op

revision = "c124"
down_revision = "c000"
branch_labels = None
depends_on = None

# The rules the lint must report (unaccepted) for this revision; empty: a safe revision.
expected = set()


def upgrade():
    op.execute("CREATE TABLE tags (id serial PRIMARY KEY, label varchar(40) NOT NULL)")
    op.execute("CREATE UNIQUE INDEX ix_tags_label ON tags (label)")
    op.execute("ALTER TABLE tags ADD COLUMN color varchar(7) NOT NULL")


def downgrade():
    op.execute("DROP TABLE tags")
