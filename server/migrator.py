"""Migration status, upgrade, and the lock that lets one migrator at a time work on a database.

Every public method blocks (it runs its own event loop), so the server calls them from an executor
thread and its own loop keeps answering. `alembic/env.py` takes the same lock through `run_locked`.
"""

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from server.db import make_engine
from server.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

VERSION_TABLE = "alembic_version"
LOCK_POLL_INTERVAL = 0.1  # pg_try_advisory_lock is cheap; waiters notice a release quickly
LOCK_REPORT_INTERVAL = 5.0
CONNECT_ATTEMPT_MAX = 10.0  # one attempt never outlives this, nor the time left of --db-wait
RETRY_BACKOFF_MAX = 2.0


class MigrationError(Exception):
    """A failure the server reports in one line and exits 1 for."""

    applied: tuple = ()  # revisions that did succeed before it


class DatabaseUnavailable(MigrationError):
    pass


class LockTimeout(MigrationError):
    pass


class UnknownRevision(MigrationError):
    pass


class RevisionFailed(MigrationError):
    def __init__(self, revision: str, message: str, applied: tuple = ()):
        super().__init__(message)
        self.revision = revision
        self.applied = applied


class Interrupted(MigrationError):
    """The process was asked to stop; the revision that was running finished or rolled back."""


@dataclasses.dataclass(frozen=True)
class Revision:
    id: str
    message: str


@dataclasses.dataclass(frozen=True)
class Status:
    current: tuple[str, ...]
    heads: tuple[str, ...]
    pending: tuple[Revision, ...]  # oldest first

    @property
    def at_head(self) -> bool:
        return not self.pending and set(self.current) == set(self.heads)


@dataclasses.dataclass(frozen=True)
class AppliedRevision:
    id: str
    message: str
    seconds: float


@dataclasses.dataclass(frozen=True)
class UpgradeResult:
    applied: tuple[AppliedRevision, ...]
    status: Status
    seconds: float


class Migrator:
    """Runs Alembic against one database."""

    def __init__(self, settings: Settings, on_phase: Callable[[str], None] = lambda phase: None):
        self.settings = settings
        self.on_phase = on_phase  # told "unavailable" / "migrating" as the work goes through them
        self.config = make_alembic_config(settings)
        self.script = ScriptDirectory.from_config(self.config)

    def status(self, wait: bool = False) -> Status:
        """Where the database stands, changing nothing (an absent SQLite file stays absent)."""
        url = self.settings.database_url
        if url.get_backend_name() == "sqlite":
            if not Path(url.database).exists():
                return self._status_of(())
            url = url.set(database=f"file:{url.database}", query={"mode": "ro", "uri": "true"})
        return asyncio.run(self._read_status(url, wait))

    async def _read_status(self, url: URL, wait: bool) -> Status:
        engine = make_engine(url, poolclass=NullPool)
        try:
            async with connect(engine, self.settings, wait, self.on_phase) as conn:
                return await conn.run_sync(self._read_status_sync)
        finally:
            await engine.dispose()

    def upgrade(self, stop: threading.Event | None = None) -> UpgradeResult:
        """Bring the database to head under the migration lock; raise MigrationError when it cannot."""
        return asyncio.run(self._upgrade(stop or threading.Event()))

    async def _upgrade(self, stop: threading.Event) -> UpgradeResult:
        started = time.monotonic()
        url = self.settings.database_url
        if url.get_backend_name() == "sqlite":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = make_migration_engine(url, label="server")
        try:
            async with connect(engine, self.settings, True, self.on_phase, stop) as conn:
                # Most starts find the database at head: answer that without queueing for the lock.
                status = await conn.run_sync(self._read_status_sync)
                if status.at_head:
                    return UpgradeResult((), status, time.monotonic() - started)
                await conn.rollback()  # the same connection then runs the revisions: one connect fewer
                self.on_phase("migrating")
                applied, status = await run_locked(
                    engine, self.settings, lambda c: self._upgrade_sync(c, stop), stop=stop, connection=conn
                )
            return UpgradeResult(tuple(applied), status, time.monotonic() - started)
        finally:
            await engine.dispose()

    def _upgrade_sync(self, connection: Connection, stop: threading.Event) -> tuple[list[AppliedRevision], Status]:
        # Read again under the lock: another process may have done the work while we waited.
        status = self._read_status_sync(connection)
        connection.commit()  # env.py must get a connection outside a transaction to commit per revision
        if not status.pending:
            return [], status
        pending = status.pending
        applied: list[AppliedRevision] = []
        committing: AppliedRevision | None = None  # ran, and its transaction is about to commit
        mark = time.monotonic()

        def on_version_apply(*, step, **_) -> None:
            nonlocal committing, mark
            now = time.monotonic()
            committing = AppliedRevision(step.up_revision_id, step.up_revision.doc or "", now - mark)
            mark = now

        def settle() -> None:
            nonlocal committing
            if committing is not None:
                applied.append(committing)
                log.info("applied revision %s (%s) in %.3f s", committing.id, committing.message, committing.seconds)
                committing = None

        def before_next_revision(_connection) -> None:
            # Each revision begins a transaction once the one before has committed: the place to stop
            # between revisions, so none is cut short or thrown away.
            settle()
            if stop.is_set() and len(applied) < len(pending):
                raise Interrupted(f"stopped on request before revision {pending[len(applied)].id}")

        self.config.attributes.update(connection=connection, on_version_apply=on_version_apply)
        event.listen(connection, "begin", before_next_revision)
        try:
            # command.upgrade(config, "heads") without reading every revision file again: the same three
            # steps on the ScriptDirectory this migrator loaded once (a tenth of the time at 200 revisions).
            with EnvironmentContext(
                self.config,
                self.script,
                fn=lambda rev, _context: self.script._upgrade_revs("heads", rev),
                destination_rev="heads",
            ):
                self.script.run_env()
            settle()
        except Interrupted as exc:
            exc.applied = tuple(applied)
            raise
        except Exception as exc:
            failed = pending[len(applied)] if len(applied) < len(pending) else Revision("?", "")
            message = f"revision {failed.id} failed: {describe(exc, self.settings)}"
            if _sqlstate(exc) == "55P03":
                message += (
                    f" (a table lock was not granted within --ddl-lock-timeout={self.settings.ddl_lock_timeout:g} s:"
                    " a long transaction holds it; retry when it is done)"
                )
            raise RevisionFailed(failed.id, message, tuple(applied)) from exc
        finally:
            event.remove(connection, "begin", before_next_revision)
            self.config.attributes.clear()
        status = self._read_status_sync(connection)
        connection.rollback()
        return applied, status

    def _read_status_sync(self, connection: Connection) -> Status:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return self._status_of(context.get_current_heads())

    def _status_of(self, current: tuple[str, ...]) -> Status:
        for revision in current:
            try:
                self.script.get_revision(revision)
            except CommandError:
                raise UnknownRevision(
                    f"database is at revision {revision}, which this build does not know "
                    "(was it migrated by a newer release?)"
                ) from None
        pending = reversed(list(self.script.iterate_revisions("heads", current or "base")))
        return Status(
            current=tuple(current),
            heads=tuple(self.script.get_heads()),
            pending=tuple(Revision(s.revision, s.doc or "") for s in pending),
        )


def make_alembic_config(settings: Settings) -> Config:
    config = Config(settings.alembic_config)
    config.attributes["settings"] = settings  # env.py targets the server's database, flags included
    return config


def make_migration_engine(url: URL, label: str) -> AsyncEngine:
    """An engine for migrating: no pool to outlive the work; named so a waiter can see who holds the lock."""
    options = {"poolclass": NullPool}
    if url.get_backend_name() == "postgresql":
        name = f"{label} on {socket.gethostname()} pid {os.getpid()}"[:63]
        options["connect_args"] = {"server_settings": {"application_name": name}}
    return make_engine(url, **options)


async def run_locked(
    engine: AsyncEngine,
    settings: Settings,
    work: Callable[[Connection], T],
    stop: threading.Event | None = None,
    connection: AsyncConnection | None = None,
) -> T:
    """Run work(connection) holding the migration lock, on a connection ready for revisions.

    The connection is the one given (outside a transaction), else a new one.
    """
    stop = stop or threading.Event()
    async with migration_lock(engine, settings, stop), contextlib.AsyncExitStack() as stack:
        conn = connection or await stack.enter_async_context(connect(engine, settings, True, stop=stop))
        if conn.dialect.name == "postgresql":
            # A revision queued behind a long transaction would queue every query behind itself.
            await conn.execute(text(f"SET lock_timeout = {int(settings.ddl_lock_timeout * 1000)}"))
            await conn.commit()
        return await conn.run_sync(work)


@contextlib.asynccontextmanager
async def connect(
    engine: AsyncEngine,
    settings: Settings,
    wait: bool,
    on_phase: Callable[[str], None] = lambda phase: None,
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
            if _is_permanent(exc) or time.monotonic() + delay > deadline or (stop and stop.is_set()):
                raise DatabaseUnavailable(unreachable_message(settings, exc)) from None
            on_phase("unavailable")
            log.warning("database not answering, retrying: %s", describe(exc, settings))
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_BACKOFF_MAX)
    try:
        yield conn
    finally:
        await conn.close()


def _is_permanent(exc: BaseException) -> bool:
    """Errors no amount of waiting mends: a wrong password, a missing role."""
    return _sqlstate(exc) in ("28P01", "28000")


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


@contextlib.asynccontextmanager
async def migration_lock(engine: AsyncEngine, settings: Settings, stop: threading.Event) -> AsyncIterator[None]:
    """Hold the database's migration lock: across threads, processes and hosts; freed when we die."""
    if engine.dialect.name == "postgresql":
        async with _advisory_lock(engine, settings, stop):
            yield
    else:
        async with _file_lock(Path(engine.url.database + ".migration-lock"), settings, stop):
            yield


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


@contextlib.asynccontextmanager
async def _advisory_lock(engine: AsyncEngine, settings: Settings, stop: threading.Event) -> AsyncIterator[None]:
    # A session lock on a connection of its own, polled: a blocking pg_advisory_lock could not time out
    # cleanly, and the lock dies with the connection when this process dies.
    async with connect(engine, settings, True, stop=stop) as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        key = await conn.scalar(_LOCK_KEY, {"table": VERSION_TABLE})

        async def try_lock() -> bool:
            return await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})

        async def holder() -> str:
            try:
                row = (await conn.execute(_LOCK_HOLDER, {"key": key})).first()
            except DBAPIError as exc:  # telling who holds it must never stop us waiting for it
                return f"another migrator (could not tell who: {describe(exc, settings)})"
            if row is None:
                return "another migrator (just released)"
            name = row.application_name or "no application name"
            return f"PostgreSQL pid {row.pid} ({name}), connected since {row.backend_start:%H:%M:%S}"

        await _poll_for_lock(try_lock, holder, settings, stop)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # a broken connection has released it already
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


@contextlib.asynccontextmanager
async def _file_lock(path: Path, settings: Settings, stop: threading.Event) -> AsyncIterator[None]:
    # flock belongs to this open file: another thread's open conflicts too, and the OS drops it on death.
    # The file itself stays: deleting a lock file races with the next process opening it.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:

        async def try_lock() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        async def holder() -> str:
            return path.read_text(errors="replace").strip() or "another migrator"

        await _poll_for_lock(try_lock, holder, settings, stop)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


async def _poll_for_lock(try_lock, holder, settings: Settings, stop: threading.Event) -> None:
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
    log.info("took the migration lock after %.2f s", time.monotonic() - started)


def unreachable_message(settings: Settings, exc: BaseException) -> str:
    url = settings.database_url
    if url.get_backend_name() == "sqlite":
        where = f"SQLite file {url.database}"
    else:
        where = f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}"
    return f"database unreachable: {where} did not answer within {settings.db_wait:g} s: {describe(exc, settings)}"


def describe(exc: BaseException, settings: Settings) -> str:
    """One line for a log: the driver's own words, never the password."""
    cause = getattr(exc, "orig", None) or exc
    words = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    words = f"{type(cause).__name__}: {words}" if words else type(cause).__name__
    password = settings.database_url.password
    return words.replace(password, "***") if password else words
