"""The schema at head, as SQLAlchemy tables: the metadata Alembic compares revisions against.

SQLAlchemy Core, not the ORM: the handlers run single statements on Core connections, and the transfer,
which plans its copy from these tables, then starts without the ORM's import (a tenth of a second of it).
"""

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, func

# Named constraints, so that revisions (and SQLite batch mode) can find them again to alter or drop.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME_MAX_LENGTH = 50

metadata = MetaData(naming_convention=NAMING_CONVENTION)

my_table = Table(
    "my_table",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(NAME_MAX_LENGTH), nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)
