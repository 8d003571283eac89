"""The engine and the one session factory the handlers share."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from server.errors import DatabaseBusy, sqlstate
from server.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

# asyncpg would otherwise wait 60 s for a host that accepts TCP and never answers.
CONNECT_TIMEOUT = 10.0
SQLITE_BUSY_TIMEOUT = 30.0  # a migrator may wait this long for a writer; a request waits --pool-timeout
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's sqlstate when lock_timeout ends a wait
# Execution options of a transaction that will write. On SQLite it begins IMMEDIATE: a deferred transaction
# that reads and then writes fails at once with "database is locked" beside another writer, since the busy
# timeout does not cover upgrading its lock; IMMEDIATE takes the write lock up front, waiting its turn.
WRITES = {"sqlite_begin": "BEGIN IMMEDIATE"}


def make_engine(url: URL, **engine_options) -> AsyncEngine:
    """An async engine for a normalised URL; SQLite gets real transactions (DDL included)."""
    # Imported here: SQLAlchemy's asyncio extension brings its ORM along, a tenth of a second the transfer
    # (which imports this module for its timeouts and URLs, and talks to its drivers directly) does not need.
    from sqlalchemy.ext.asyncio import create_async_engine

    # Each driver's timeout unless the caller gives its own. sqlite3's is its busy timeout: wait for another
    # process's write lock instead of failing at once with "database is locked".
    timeout = CONNECT_TIMEOUT if url.get_backend_name() == "postgresql" else SQLITE_BUSY_TIMEOUT
    engine_options["connect_args"] = {"timeout": timeout, **engine_options.get("connect_args", {})}
    if url.get_backend_name() == "postgresql":
        return create_async_engine(url, **engine_options)
    engine = create_async_engine(url, **engine_options)
    _use_real_sqlite_transactions(engine)
    return engine


def read_only_url(url: URL) -> URL:
    """The URL to look at a database with, changing nothing: an SQLite file opened read-only."""
    if url.get_backend_name() != "sqlite":
        return url
    # Percent-encoded: in a URI, a '#' or '?' in the path would end the file's name there, and the
    # mode=ro after it would be lost (SQLite then created the shorter name's file, read-write).
    return url.set(database=f"file:{urllib.parse.quote(url.database)}", query={"mode": "ro", "uri": "true"})


def sqlite_file(url: URL) -> Path:
    """The file an SQLite URL opens, also in the URI form read_only_url makes of it."""
    if url.query.get("uri") == "true":
        return Path(urllib.parse.unquote(url.database.removeprefix("file:")))
    return Path(url.database)


def _use_real_sqlite_transactions(engine: AsyncEngine) -> None:
    # Python's sqlite3 runs DDL outside any transaction, so a failing revision would stay half applied.
    # Taking BEGIN/COMMIT into our own hands makes each revision all or nothing, as on PostgreSQL.
    read_only = engine.url.query.get("mode") == "ro"

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        if not read_only:
            # WAL: readers never wait for the writer, and it is the file's own setting, kept across opens
            # (a no-op once set). A read-only connection could not set it and need not.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql(connection.get_execution_options().get("sqlite_begin", "BEGIN"))


def make_serving_engine(settings: Settings) -> AsyncEngine:
    """The engine behind the handlers' session factory: a fixed pool and a bounded wait for it."""
    options = dict(
        pool_size=settings.pool_size, max_overflow=settings.pool_max_overflow, pool_timeout=settings.pool_timeout
    )
    if settings.database_url.get_backend_name() == "postgresql":
        # Each request is one statement, atomic by itself: a BEGIN and ROLLBACK around it would triple its
        # round trips. (On SQLite, web/queries.py runs the handlers' statements in sqlite3's autocommit.)
        options["isolation_level"] = "AUTOCOMMIT"
        options["pool_reset_on_return"] = None  # with no transaction there is nothing to roll back
        # A table locked by a migration (or anyone) holds a request at most --pool-timeout, then 503 busy:
        # requests queued behind a lock would otherwise hold every pooled connection until it goes.
        lock_timeout = str(max(1, round(settings.pool_timeout * 1000)))
        options["connect_args"] = {"server_settings": {"lock_timeout": lock_timeout}}
    else:
        # sqlite3 blocks in its busy handler, where no cancellation reaches it (aiosqlite's thread runs on
        # after asyncio gives up): the lock wait itself must be as short as a request may wait.
        options["connect_args"] = {"timeout": settings.pool_timeout}
        # The handlers' statements run in autocommit (web/queries.py) and Core connections roll back their
        # own transactions as they close: the pool's rollback on return would only cost a hand-off per request.
        options["pool_reset_on_return"] = None
    return make_engine(settings.database_url, **options)


def make_session_factory(engine: AsyncEngine, settings: Settings) -> SessionFactory:
    """The one session factory every handler receives."""
    width = settings.pool_size + settings.pool_max_overflow
    return SessionFactory(engine, width, settings.pool_timeout)


class SessionFactory:
    """async_sessionmaker behind a first-come, first-served gate as wide as the pool.

    SQLAlchemy's async pool hands a returned connection to whoever asks next, not to whoever has waited
    longest: at 64 connections the unlucky requests waited seconds (see benchmarks/reads.py's p99).
    Requests queue here in order, then take a connection from a pool that never has waiters.
    """

    def __init__(self, engine: AsyncEngine, width: int, timeout: float):
        from sqlalchemy.ext.asyncio import async_sessionmaker  # see make_engine

        self.engine = engine
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        self.gate = asyncio.Semaphore(width)  # FIFO: it wakes its waiters in the order they came
        self.timeout = timeout
        # SQLite takes one writer at a time: writers of this process queue here, in order, rather than in
        # SQLite's busy handler, which polls with sleeps (long tails, and CPU spent on threads that wait).
        self.sqlite_writer = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[AsyncSession]:
        """A session: one unit of work."""
        async with self._turn(), self.sessionmaker() as session:
            yield session

    @contextlib.asynccontextmanager
    async def connection(self, lock_wait: float | None = None, writes: bool = False) -> AsyncIterator[AsyncConnection]:
        """A Core connection from the same pool, in the same queue: for a single statement, where a
        session's unit-of-work bookkeeping would be a large share of the request (benchmarks/reads.py measures it).

        lock_wait shortens SQLite's busy timeout for this use (asyncio's timeouts cannot interrupt it);
        writes: the connection will write (on SQLite it waits for this process's other writers first)."""
        async with self._writer_turn(writes), self._turn(), self.engine.connect() as connection:
            if lock_wait is None or connection.dialect.name != "sqlite":
                yield connection
                return
            previous = (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar()
            await connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(lock_wait * 1000)}")
            try:
                yield connection
            finally:
                await connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(previous)}")

    def _writer_turn(self, writes: bool) -> contextlib.AbstractAsyncContextManager:
        if not writes or self.sqlite_writer is None:
            return contextlib.nullcontext()
        return self._held(self.sqlite_writer, "no turn to write")

    def _turn(self) -> contextlib.AbstractAsyncContextManager:
        return self._held(self.gate, "no database connection")

    @contextlib.asynccontextmanager
    async def _held(self, primitive: asyncio.Lock | asyncio.Semaphore, what: str) -> AsyncIterator[None]:
        try:
            if primitive.locked():  # a timed wait makes a task of its own: only when there is a queue
                await asyncio.wait_for(primitive.acquire(), self.timeout)
            else:
                await primitive.acquire()
        except TimeoutError:
            raise PoolTimeoutError(f"{what} came free within {self.timeout:g} s") from None
        try:
            yield
        finally:
            primitive.release()


def is_busy(exc: BaseException) -> bool:
    """The database answered that what we need is locked: SQLite's SQLITE_BUSY or SQLITE_LOCKED, or
    PostgreSQL's lock_timeout (as DatabaseBusy from web/queries.py, or through SQLAlchemy)."""
    if isinstance(exc, DatabaseBusy) or sqlstate(exc) == LOCK_NOT_AVAILABLE:
        return True
    cause = getattr(exc, "orig", None) or exc
    code = getattr(cause, "sqlite_errorcode", None)
    if code is None:  # aiosqlite raises sqlite3's own errors; SQLAlchemy's adapter keeps them as __cause__
        code = getattr(cause.__cause__, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
