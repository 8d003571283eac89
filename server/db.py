"""The engine and the one session factory the handlers share."""

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from server.settings import Settings

# asyncpg would otherwise wait 60 s for a host that accepts TCP and never answers.
CONNECT_TIMEOUT = 10.0
SQLITE_BUSY_TIMEOUT = 30.0


def make_engine(url: URL, **engine_options) -> AsyncEngine:
    """An async engine for a normalised URL; SQLite gets real transactions (DDL included)."""
    if url.get_backend_name() == "postgresql":
        engine_options.setdefault("connect_args", {"timeout": CONNECT_TIMEOUT})
        return create_async_engine(url, **engine_options)
    # sqlite3's timeout is its busy timeout: wait for another process's write lock instead of
    # failing at once with "database is locked".
    engine_options.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT})
    engine = create_async_engine(url, **engine_options)
    _use_real_sqlite_transactions(engine)
    return engine


def _use_real_sqlite_transactions(engine: AsyncEngine) -> None:
    # Python's sqlite3 runs DDL outside any transaction, so a failing revision would stay half applied.
    # Taking BEGIN/COMMIT into our own hands makes each revision all or nothing, as on PostgreSQL.
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN")


def make_serving_engine(settings: Settings) -> AsyncEngine:
    """The engine behind the handlers' session factory: a fixed pool and a bounded wait for it."""
    options = dict(
        pool_size=settings.pool_size, max_overflow=settings.pool_max_overflow, pool_timeout=settings.pool_timeout
    )
    if settings.database_url.get_backend_name() == "postgresql":
        # Each request is one statement, atomic by itself: a BEGIN and ROLLBACK around it would triple its
        # round trips. (SQLite keeps its explicit BEGIN: it costs no round trip there.)
        options["isolation_level"] = "AUTOCOMMIT"
        options["pool_reset_on_return"] = None  # with no transaction there is nothing to roll back
    return make_engine(settings.database_url, **options)


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker:
    """The one session factory every handler receives."""
    return async_sessionmaker(engine, expire_on_commit=False)
