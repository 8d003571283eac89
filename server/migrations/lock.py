"""The migration lock: one migrator per database at a time, across threads, processes and hosts.

PostgreSQL: a session advisory lock taken on the very connection that runs the revisions, so it is
released only when that session's work is gone. SQLite: flock on a file beside the database.
"""

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from server.db import WRITES
from server.errors import DatabaseUnavailable, Interrupted, LockLost, LockTimeout, describe
from server.migrations.status import VERSION_TABLE
from server.settings import Settings

log = logging.getLogger(__name__)

LOCK_POLL_INTERVAL = 0.1  # pg_try_advisory_lock is cheap; waiters notice a release quickly
LOCK_REPORT_INTERVAL = 5.0

_LOCK_KEY = text(
    "SELECT ('x' || left(md5(current_database() || '.' || current_schema() || '.' || :table), 16))::bit(64)::bigint"
)
_LOCK_HOLDER = text(
    "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND l.classid::bigint = ((CAST(:key AS bigint) >> 32) & 4294967295)"
    " AND l.objid::bigint = (CAST(:key AS bigint) & 4294967295)"
)
_HOLDING = text(
    "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
    " AND pid = pg_backend_pid()"
    " AND classid::bigint = ((CAST(:key AS bigint) >> 32) & 4294967295)"
    " AND objid::bigint = (CAST(:key AS bigint) & 4294967295))"
)


def lock_file_path(database: str) -> Path:
    return Path(database + ".migration-lock")


@contextlib.asynccontextmanager
async def migration_lock(conn: AsyncConnection, settings: Settings, stop: threading.Event) -> AsyncIterator[float]:
    """Hold the database's migration lock while the block runs, given the seconds it waited for it; conn is
    outside a transaction."""
    if conn.dialect.name == "postgresql":
        async with _advisory_lock(conn, settings, stop) as waited:
            yield waited
    else:
        async with _file_lock(lock_file_path(conn.engine.url.database), settings, stop) as waited:
            # Under the lock every transaction may write: it takes SQLite's write lock up front. (Before it,
            # the status read stays deferred: it must not queue behind a running revision's write lock.)
            await conn.execution_options(**WRITES)
            yield waited


@contextlib.asynccontextmanager
async def _advisory_lock(conn: AsyncConnection, settings: Settings, stop: threading.Event) -> AsyncIterator[float]:
    # Polled with pg_try_advisory_lock: a blocking pg_advisory_lock could not time out cleanly.
    key = await conn.scalar(_LOCK_KEY, {"table": VERSION_TABLE})
    await conn.commit()

    async def try_lock() -> bool:
        taken = await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
        await conn.commit()  # a session lock outlives the transaction; the transaction must not linger
        return taken

    async def holder() -> str:
        try:
            row = (await conn.execute(_LOCK_HOLDER, {"key": key})).first()
            await conn.commit()
        except DBAPIError as exc:  # telling who holds it must never stop us waiting for it
            await conn.rollback()
            return f"another migrator (could not tell who: {describe(exc, settings.database_url)})"
        if row is None:
            return "another migrator (just released)"
        name = row.application_name or "no application name"
        return f"PostgreSQL pid {row.pid} ({name}), connected since {row.backend_start:%H:%M:%S}"

    waited = await _poll_for_lock(try_lock, holder, settings, stop)
    conn.info["migration_lock_key"] = key
    try:
        yield waited
    finally:
        conn.info.pop("migration_lock_key", None)
        with contextlib.suppress(Exception):  # a broken connection has released it already
            await conn.rollback()
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            await conn.commit()


def still_holding(sync_conn) -> None:
    """Raise LockLost unless this session still holds the migration lock (PostgreSQL; SQLite's flock
    cannot be lost while the process lives). Runs inside the caller's transaction."""
    key = sync_conn.info.get("migration_lock_key")
    if key is None:
        return
    try:
        held = sync_conn.scalar(_HOLDING, {"key": key})
    except DBAPIError as exc:
        raise LockLost(f"lost the database connection that held the migration lock: {describe(exc)}") from None
    if not held:
        raise LockLost("the migration lock is no longer held by this session; stopping before the next revision")


@contextlib.asynccontextmanager
async def _file_lock(path: Path, settings: Settings, stop: threading.Event) -> AsyncIterator[float]:
    # flock belongs to this open file: another thread's open conflicts too, and the OS drops it on death.
    # The file itself stays: deleting a lock file races with the next process opening it.
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Never through a symlink: the lock file's target would be truncated and overwritten.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise DatabaseUnavailable(
                f"the migration lock file {path} is a symlink; refusing to follow it (remove it)"
            ) from None
        raise DatabaseUnavailable(f"cannot open the migration lock file {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DatabaseUnavailable(f"the migration lock file {path} is not a regular file; remove it")

        async def try_lock() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        async def holder() -> str:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another migrator"

        waited = await _poll_for_lock(try_lock, holder, settings, stop)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield waited
    finally:
        os.close(fd)  # releases the flock


async def _poll_for_lock(
    try_lock: Callable[[], Awaitable[bool]], holder: Callable[[], Awaitable[str]], settings, stop
) -> float:
    """Wait for the lock; the seconds it took."""
    started = time.monotonic()
    deadline = started + settings.migration_lock_timeout
    next_report = started
    while not await try_lock():
        now = time.monotonic()
        if stop.is_set():
            raise Interrupted("stopped on request while waiting for the migration lock")
        if now >= deadline:
            raise LockTimeout(
                f"gave up waiting for the migration lock after {settings.migration_lock_timeout:g} s; "
                f"it is held by {await holder()}"
            )
        if now >= next_report:
            log.info("waiting for the migration lock, held by %s", await holder())
            next_report = now + LOCK_REPORT_INTERVAL
        await asyncio.sleep(min(LOCK_POLL_INTERVAL, max(deadline - now, 0.01)))
    waited = time.monotonic() - started
    log.info("took the migration lock after %.2f s", waited)
    return waited
