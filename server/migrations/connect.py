"""Connections for migrating: retried with backoff while the database comes up, refused at once for good."""

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from server.db import make_engine
from server.errors import DatabaseUnavailable, Phase, describe, sqlstate
from server.settings import Settings

log = logging.getLogger(__name__)

CONNECT_ATTEMPT_MAX = 10.0  # one attempt never outlives this, nor the time left of --db-wait
RETRY_BACKOFF_MAX = 2.0
# Errors no amount of waiting mends: a wrong password, a missing role, a missing database.
PERMANENT = {
    "28P01": "the password was refused",
    "28000": "the role is not allowed to connect (does it exist?)",
    "3D000": "the database does not exist",
}


def make_migration_engine(url: URL, label: str) -> AsyncEngine:
    """An engine for migrating: no pool to outlive the work; named so a waiter can see who holds the lock.

    Migrating writes: an SQLite file's directory is made if missing."""
    options: dict = {"poolclass": NullPool}
    if url.get_backend_name() == "sqlite":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    if url.get_backend_name() == "postgresql":
        name = f"{label} on {socket.gethostname()} pid {os.getpid()}"[:63]
        options["connect_args"] = {"server_settings": {"application_name": name}}
    return make_engine(url, **options)


@contextlib.asynccontextmanager
async def connect(
    engine: AsyncEngine,
    settings: Settings,
    wait: bool,
    on_phase: Callable[[Phase], None] = lambda phase: None,
    stop: threading.Event | None = None,
) -> AsyncIterator[AsyncConnection]:
    """A connection, retried with backoff until --db-wait runs out when wait is true."""
    deadline = time.monotonic() + (settings.db_wait if wait else 0)
    delay = 0.1
    while True:
        left = deadline - time.monotonic()
        try:
            conn = await asyncio.wait_for(engine.connect(), timeout=max(min(left, CONNECT_ATTEMPT_MAX), 0.5))
            break
        except (TimeoutError, OSError, DBAPIError) as exc:
            if sqlstate(exc) in PERMANENT:
                raise DatabaseUnavailable(refused_message(settings, exc)) from None
            if time.monotonic() + delay > deadline or (stop and stop.is_set()):
                raise DatabaseUnavailable(unreachable_message(settings, exc)) from None
            on_phase(Phase.UNAVAILABLE)
            log.warning("database not answering, retrying: %s", describe(exc, settings.database_url))
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_BACKOFF_MAX)
    try:
        yield conn
    finally:
        await conn.close()


def where(url: URL) -> str:
    """The database, named without secrets."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    return f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}"


def unreachable_message(settings: Settings, exc: BaseException) -> str:
    url = settings.database_url
    return f"database unreachable: {where(url)} did not answer within {settings.db_wait:g} s: {describe(exc, url)}"


def refused_message(settings: Settings, exc: BaseException) -> str:
    url = settings.database_url
    reason = PERMANENT[sqlstate(exc)]
    return f"database refused the connection: {where(url)} (database {url.database!r}): {reason}: {describe(exc, url)}"
