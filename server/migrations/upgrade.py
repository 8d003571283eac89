"""Upgrading a database to head under the migration lock, one transaction per revision.

Every public method blocks (it runs its own event loop), so the server calls them from an executor
thread and its own loop keeps answering. `alembic/env.py` comes through `run_online` for the same lock.
"""

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from alembic import context as alembic_context  # the EnvironmentContext env.py runs in, while it does
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool

from server.db import LOCK_NOT_AVAILABLE, make_engine, read_only_url
from server.errors import Interrupted, Phase, RevisionFailed, ServiceError, describe, sqlstate
from server.migrations.backup import Snapshot, snapshot_before_upgrade
from server.migrations.connect import connect, make_migration_engine
from server.migrations.events import AppliedRevision, MigrationEvents, Revision, Status, UpgradeResult
from server.migrations.lint.enforce import enforce_lint
from server.migrations.lock import migration_lock, still_holding
from server.migrations.status import VERSION_TABLE, make_alembic_config, read_status, status_of
from server.settings import Settings, load_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_PAUSE = 1.0  # the first pause before retrying a revision that hit lock_timeout; it doubles


@dataclasses.dataclass
class HandedOver:
    """What the migrator hands env.py: a connection on which it holds the lock, and a callback."""

    connection: Connection
    on_version_apply: Callable | None = None


class Migrator:
    """Runs Alembic against one database."""

    def __init__(
        self,
        settings: Settings,
        on_phase: Callable[[Phase], None] = lambda phase: None,
        events: MigrationEvents | None = None,
    ):
        self.settings = settings
        self.on_phase = on_phase  # told UNAVAILABLE / MIGRATING as the work goes through them
        self.events = events or MigrationEvents()
        self.script = ScriptDirectory.from_config(make_alembic_config(settings))
        self.last_snapshot: Snapshot | None = None  # the latest this migrator took, for GET /admin/migrations

    def status(self, wait: bool = False) -> Status:
        """Where the database stands, changing nothing (an absent SQLite file stays absent)."""
        url = self.settings.database_url
        if url.get_backend_name() == "sqlite" and not Path(url.database).exists():
            return status_of(self.script, ())
        return asyncio.run(self._read_status(read_only_url(url), wait))

    async def _read_status(self, url: URL, wait: bool) -> Status:
        engine = make_engine(url, poolclass=NullPool)
        try:
            async with connect(engine, self.settings, wait, self.on_phase) as conn:
                status = await conn.run_sync(lambda c: read_status(self.script, c))
            self.events.status_read(status)
            return status
        finally:
            await engine.dispose()

    def upgrade(self, stop: threading.Event | None = None) -> UpgradeResult:
        """Bring the database to head under the migration lock; raise ServiceError when it cannot."""
        return asyncio.run(self._upgrade(stop or threading.Event()))

    async def _upgrade(self, stop: threading.Event) -> UpgradeResult:
        started = time.monotonic()
        engine = make_migration_engine(self.settings.database_url, label="server")
        try:
            async with connect(engine, self.settings, True, self.on_phase, stop) as conn:
                # Most starts find the database at head: answer that without queueing for the lock.
                status = await conn.run_sync(lambda c: read_status(self.script, c))
                self.events.status_read(status)
                if status.at_head:
                    return UpgradeResult((), status, time.monotonic() - started)
                await conn.rollback()  # the same connection then takes the lock and runs the revisions
                self.on_phase(Phase.MIGRATING)
                applied, status = await run_locked(
                    conn, self.settings, lambda c: self._upgrade_sync(c, stop), stop, self.events.lock_taken
                )
            return UpgradeResult(tuple(applied), status, time.monotonic() - started)
        finally:
            await engine.dispose()

    def _upgrade_sync(self, connection: Connection, stop: threading.Event) -> tuple[list[AppliedRevision], Status]:
        # Read again under the lock: another process may have done the work while we waited.
        status = read_status(self.script, connection)
        connection.commit()  # env.py must get a connection outside a transaction to commit per revision
        if status.pending:
            snapshot = before_first_revision(self.settings, self.script, connection, status)
            if snapshot is not None:
                self.last_snapshot = snapshot
        applied: list[AppliedRevision] = []
        retries_left, pause = self.settings.ddl_lock_retries, RETRY_PAUSE
        while status.pending:
            try:
                applied += _Run(self, connection, status.pending, stop).revisions()
            except RevisionFailed as exc:
                if sqlstate(exc.__cause__) != LOCK_NOT_AVAILABLE or not retries_left or stop.is_set():
                    exc.applied = tuple(applied) + exc.applied
                    raise
                retries_left -= 1
                applied += exc.applied
                log.warning(
                    "revision %s: a table lock was not granted within --ddl-lock-timeout=%g s; "
                    "retrying in a fresh transaction in %g s (%d retries left)",
                    exc.revision,
                    self.settings.ddl_lock_timeout,
                    pause,
                    retries_left,
                )
                if stop.wait(pause):
                    raise Interrupted(f"stopped on request before retrying revision {exc.revision}") from None
                pause *= 2
            status = read_status(self.script, connection)
            connection.commit()
        return applied, status


def before_first_revision(
    settings: Settings, script: ScriptDirectory, connection: Connection, status: Status
) -> Snapshot | None:
    """Under the migration lock, before the first pending revision runs, on every path that upgrades
    (server start, --migrate=only, the admin upgrade, `alembic upgrade` by hand): the steps that may
    refuse to go on. The connection is outside a transaction and must be left so."""
    enforce_lint(settings, script, connection, status)  # refuses first: a refused upgrade needs no snapshot
    return snapshot_before_upgrade(settings, status)


class _Run:
    """One pass of Alembic's upgrade over the pending revisions, reporting each as it commits."""

    def __init__(self, migrator: Migrator, connection: Connection, pending: tuple[Revision, ...], stop):
        self.migrator, self.connection, self.pending, self.stop = migrator, connection, pending, stop
        self.applied: list[AppliedRevision] = []
        self.committing: AppliedRevision | None = None  # ran, and its transaction is about to commit
        self.mark = time.monotonic()

    def revisions(self) -> list[AppliedRevision]:
        settings = self.migrator.settings
        config = make_alembic_config(settings)
        config.attributes["handed_over"] = HandedOver(self.connection, self.on_version_apply)
        event.listen(self.connection, "begin", self.before_next_revision)
        try:
            run_upgrade(config, self.migrator.script)
            self.settle()
        except Interrupted as exc:
            exc.applied = tuple(self.applied)
            raise
        except Exception as exc:
            if isinstance(exc, ServiceError) and not isinstance(exc, RevisionFailed):
                exc.applied = tuple(self.applied)
                raise
            failed = self.pending[len(self.applied)] if len(self.applied) < len(self.pending) else Revision("?", "")
            message = f"revision {failed.id} failed: {describe(exc, settings.database_url)}"
            if sqlstate(exc) == LOCK_NOT_AVAILABLE:
                message += (
                    f" (a table lock was not granted within --ddl-lock-timeout={settings.ddl_lock_timeout:g} s"
                    f" after {settings.ddl_lock_retries} retries: a long transaction holds it; retry when it is done)"
                )
            raise RevisionFailed(failed.id, message, tuple(self.applied)) from exc
        finally:
            event.remove(self.connection, "begin", self.before_next_revision)
        return self.applied

    def on_version_apply(self, *, step, **_) -> None:
        now = time.monotonic()
        self.committing = AppliedRevision(step.up_revision_id, step.up_revision.doc or "", now - self.mark)
        self.mark = now

    def settle(self) -> None:
        if self.committing is not None:
            self.applied.append(self.committing)
            log.info("applied revision %s (%s) in %.3f s", *dataclasses.astuple(self.committing))
            self.committing = None

    def before_next_revision(self, connection: Connection) -> None:
        # Each revision begins a transaction once the one before has committed: the place to stop
        # between revisions, so none is cut short or thrown away.
        self.settle()
        if len(self.applied) < len(self.pending):
            if self.stop.is_set():
                raise Interrupted(f"stopped on request before revision {self.pending[len(self.applied)].id}")
            still_holding(connection)


def run_upgrade(config: Config, script: ScriptDirectory) -> None:
    """alembic.command.upgrade(config, "heads"), on a ScriptDirectory already loaded.

    command.upgrade would parse every revision file again (a tenth of a start at 200 revisions); these are
    its own three steps, and `_upgrade_revs` is the one private call (tests/migrations/test_upgrade.py
    fails by name if Alembic changes it).
    """
    with EnvironmentContext(
        config, script, fn=lambda rev, _context: script._upgrade_revs("heads", rev), destination_rev="heads"
    ):
        script.run_env()


async def run_locked(
    conn: AsyncConnection,
    settings: Settings,
    work: Callable[[Connection], T],
    stop,
    on_locked: Callable[[float], None] = lambda waited: None,
) -> T:
    """Run work(connection) holding the migration lock on conn (outside a transaction), set up for revisions;
    on_locked is told how long the lock took."""
    if conn.dialect.name == "postgresql":
        await _prepare_postgres_session(conn, settings)
    async with migration_lock(conn, settings, stop) as waited:
        on_locked(waited)
        return await conn.run_sync(work)


@contextlib.asynccontextmanager
async def locked_session(
    settings: Settings, label: str, stop: threading.Event | None = None
) -> AsyncIterator[AsyncConnection]:
    """A new connection to the settings' database, holding the migration lock, set up for revisions."""
    engine = make_migration_engine(settings.database_url, label=label)
    try:
        async with connect(engine, settings, True, stop=stop) as conn:
            if conn.dialect.name == "postgresql":
                await _prepare_postgres_session(conn, settings)
            async with migration_lock(conn, settings, stop or threading.Event()):
                yield conn
    finally:
        await engine.dispose()


async def _prepare_postgres_session(conn: AsyncConnection, settings: Settings) -> None:
    # A revision queued behind a long transaction would queue every query behind itself.
    await conn.execute(text(f"SET lock_timeout = {int(settings.ddl_lock_timeout * 1000)}"))
    # This session holds the lock: the server must not close it for idling between revisions.
    await conn.execute(text("SET idle_session_timeout = 0"))
    await conn.execute(text("SET idle_in_transaction_session_timeout = 0"))
    # PostgreSQL >= 14: if we die mid-statement, our backend notices within a second, cancels and rolls back.
    if conn.dialect.server_version_info >= (14,):
        await conn.execute(text("SET client_connection_check_interval = 1000"))
    else:
        log.info("PostgreSQL before 14: a migrator killed mid-statement leaves its statement running until done")
    await conn.commit()


def run_online(config: Config, do_run_migrations: Callable[[Connection], None]) -> None:
    """env.py's online path: on the connection the server handed over, or (by hand) under our own lock."""
    handed: HandedOver | None = config.attributes.get("handed_over")
    if handed is not None:
        do_run_migrations(handed.connection)
        return
    settings = config.attributes.get("settings") or load_settings(environ=None)
    script = alembic_context.script  # env.py's EnvironmentContext has it loaded already

    def upgrading_by_hand(connection: Connection) -> None:
        status = read_status(script, connection)
        connection.commit()
        if status.pending and _is_upgrade(script, status):
            before_first_revision(settings, script, connection, status)
        event.listen(connection, "begin", still_holding)  # before each revision, as the server does
        try:
            do_run_migrations(connection)
        finally:
            event.remove(connection, "begin", still_holding)

    async def by_hand() -> None:
        async with locked_session(settings, label="alembic") as conn:
            await conn.run_sync(upgrading_by_hand)

    try:
        asyncio.run(by_hand())
    except ServiceError as exc:
        raise CommandError(str(exc)) from None  # one line, as Alembic reports its own failures


def _is_upgrade(script: ScriptDirectory, status: Status) -> bool:
    """Whether env.py runs for an upgrade (not a downgrade, a stamp, a check): what lint and backup guard."""
    command = getattr(alembic_context.config.cmd_opts, "cmd", None)
    if command:  # the alembic command line
        return command[0].__name__ == "upgrade"
    # alembic.command.<name>(config, …) from Python: an upgrade when the destination lies ahead
    destination = alembic_context.get_revision_argument()
    if destination in ("head", "heads") or str(destination).startswith("+"):
        return True
    pending = {r.id for r in status.pending}
    try:
        return any(r.revision in pending for r in script.get_revisions(destination) if r is not None)
    except CommandError:
        return False


def context_options(config: Config, connection: Connection) -> dict:
    """The options env.py gives context.configure, beyond the template's."""
    handed: HandedOver | None = config.attributes.get("handed_over")
    return dict(
        version_table=VERSION_TABLE,
        # SQLite alters a table only by copying it; batch mode does that.
        render_as_batch=connection.dialect.name == "sqlite",
        # A failing revision leaves the database at the last one that succeeded.
        transaction_per_migration=True,
        on_version_apply=handed.on_version_apply if handed else None,
    )
