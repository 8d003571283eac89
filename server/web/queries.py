"""The table's statements, built once from the models, and run at the driver's speed."""

import functools

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.db import WRITES
from server.errors import DatabaseBusy, DatabaseUnavailable
from server.models import my_table

# Zipped with plain rows: far cheaper than row mappings. As plain str: a Core column's name is a str subclass
# (quoted_name), which orjson does not take as a key.
COLUMNS = tuple(str(column.name) for column in my_table.c)
# Built once: SQLAlchemy then finds the compiled statement in its cache, and asyncpg its prepared one.
SELECT_PAGE = (
    select(my_table).where(my_table.c.id > bindparam("after")).order_by(my_table.c.id).limit(bindparam("limit"))
)
INSERT_ROW = insert(my_table).returning(my_table)


class _Asyncpg:
    """The same statements compiled once for asyncpg, and the errors it raises. Made on first use: a server
    on SQLite never imports asyncpg and SQLAlchemy's PostgreSQL dialect (a twentieth of its start)."""

    def __init__(self):
        import asyncpg
        from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

        page = SELECT_PAGE.compile(dialect=asyncpg_dialect.dialect())
        assert page.positiontup == ["after", "limit"], page.positiontup  # $1 = after, $2 = limit
        row = INSERT_ROW.compile(dialect=asyncpg_dialect.dialect(), column_keys=["name"])
        assert row.positiontup == ["name"], row.positiontup
        self.select_page, self.insert_row = str(page), str(row)
        self.disconnected = (
            asyncpg.InterfaceError,
            asyncpg.PostgresConnectionError,
            asyncpg.exceptions.OperatorInterventionError,
        )
        self.lock_not_available = asyncpg.LockNotAvailableError


_asyncpg = functools.cache(_Asyncpg)


async def fetch_page(connection: AsyncConnection, after: int, limit: int) -> list[dict]:
    """Rows with id > after, ascending, as dicts."""
    if connection.dialect.name != "postgresql":
        rows = (await connection.execute(SELECT_PAGE, {"after": after, "limit": limit})).all()
        return [dict(zip(COLUMNS, row, strict=True)) for row in rows]
    # asyncpg's own prepared statement and records, on the pooled connection: SQLAlchemy's execution and
    # result layers would add a visible share to the busiest request we serve (benchmarks/reads.py).
    records = await _on_driver(connection, "fetch", "select_page", after, limit)
    return [dict(record) for record in records]


async def insert_row(connection: AsyncConnection, name: str) -> dict:
    """Insert a row and return it as a dict, committed."""
    if connection.dialect.name != "postgresql":
        connection = await connection.execution_options(**WRITES)
        async with connection.begin():
            row = (await connection.execute(INSERT_ROW, {"name": name})).one()
        return dict(zip(COLUMNS, row, strict=True))
    # One statement on an autocommit connection: atomic by itself, one round trip (benchmarks/writes.py).
    return dict(await _on_driver(connection, "fetchrow", "insert_row", name))


async def _on_driver(connection: AsyncConnection, method: str, statement: str, *args):
    """A prepared statement (an attribute of _Asyncpg) run by asyncpg itself on the pooled connection
    (PostgreSQL only)."""
    raw = await connection.get_raw_connection()
    driver = _asyncpg()
    try:
        return await getattr(raw.driver_connection, method)(getattr(driver, statement), *args)
    except driver.disconnected:
        await connection.invalidate()  # what SQLAlchemy does on a disconnect: the pool forgets this connection
        raise DatabaseUnavailable("database unavailable") from None
    except driver.lock_not_available:  # the serving engine's lock_timeout (db.make_serving_engine)
        raise DatabaseBusy("database busy: the table is locked") from None
