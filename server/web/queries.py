"""The table's statements, built once from the models, and run at the driver's speed."""

import datetime
import functools
import sqlite3

from sqlalchemy import DateTime, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

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


class _Sqlite:
    """The same statements compiled once for sqlite3, and where their rows hold timestamps. Made on first use,
    as _Asyncpg: a server on PostgreSQL never imports SQLAlchemy's SQLite dialect."""

    def __init__(self):
        from sqlalchemy.dialects import sqlite

        page = SELECT_PAGE.compile(dialect=sqlite.dialect())
        assert page.positiontup == ["after", "limit", "param_1"], page.positiontup  # LIMIT ? OFFSET ?
        row = INSERT_ROW.compile(dialect=sqlite.dialect(), column_keys=["name"])
        assert row.positiontup == ["name"], row.positiontup
        self.select_page, self.insert_row = str(page), str(row)
        self.timestamps = tuple(i for i, column in enumerate(my_table.c) if isinstance(column.type, DateTime))


_sqlite = functools.cache(_Sqlite)


async def fetch_page(connection: AsyncConnection, after: int, limit: int) -> list[dict]:
    """Rows with id > after, ascending, as dicts."""
    if connection.dialect.name != "postgresql":
        return await _on_sqlite3(connection, "select_page", after, limit, 0)
    # asyncpg's own prepared statement and records, on the pooled connection: SQLAlchemy's execution and
    # result layers would add a visible share to the busiest request we serve (benchmarks/reads.py).
    records = await _on_asyncpg(connection, "fetch", "select_page", after, limit)
    return [dict(record) for record in records]


async def insert_row(connection: AsyncConnection, name: str) -> dict:
    """Insert a row and return it as a dict, committed."""
    if connection.dialect.name != "postgresql":
        (row,) = await _on_sqlite3(connection, "insert_row", name)
        return row
    # One statement on an autocommit connection: atomic by itself, one round trip (benchmarks/writes.py).
    return dict(await _on_asyncpg(connection, "fetchrow", "insert_row", name))


async def _on_asyncpg(connection: AsyncConnection, method: str, statement: str, *args):
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


async def _on_sqlite3(connection: AsyncConnection, statement: str, *args) -> list[dict]:
    """A statement (an attribute of _Sqlite) run by sqlite3 itself on the pooled connection, in one hand-off
    to aiosqlite's thread (SQLite only).

    Through SQLAlchemy an insert took nine (cursors opened and closed, BEGIN, the statement, its rows, COMMIT,
    the pool's rollback) and a page eight, each a wait for the event loop; a writer held this process's turn
    to write through all of them (benchmarks/writes.py).
    The connection is in autocommit (db.py): the statement is a transaction of its own, and an INSERT asks
    for the write lock as it starts, so it waits in the busy handler as under BEGIN IMMEDIATE."""
    raw = await connection.get_raw_connection()
    driver = _sqlite()
    try:
        rows = await raw.driver_connection.execute_fetchall(getattr(driver, statement), args)
    except sqlite3.Error:
        # A row sqlite3 could not convert (text that is not UTF-8) leaves its statement open, its cursor
        # kept alive by the traceback: the connection would read an old snapshot, and its writes fail busy,
        # until the garbage collector ran. The pool forgets it, as it forgets a PostgreSQL connection lost.
        await connection.invalidate()
        raise
    return [_from_sqlite(row, driver.timestamps) for row in rows]


def _from_sqlite(row: tuple, timestamps: tuple[int, ...]) -> dict:
    """A row as SQLAlchemy's types give it: SQLite keeps timestamps as text (UTC, naive, as CURRENT_TIMESTAMP)."""
    values = list(row)
    for i in timestamps:
        if values[i] is not None:
            values[i] = datetime.datetime.fromisoformat(values[i])
    return dict(zip(COLUMNS, values, strict=True))
