"""The migrator run off the event loop: one job at a time on one thread, the last upgrade remembered.

Startup and POST /admin/migrations/upgrade both come through here, so both take the same locked path.
"""

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from server.errors import Phase, ServiceError, SettingsError, outcome
from server.migrations.events import MigrationEvents, Status, UpgradeResult
from server.settings import Settings

if TYPE_CHECKING:
    from server.migrations.upgrade import Migrator

log = logging.getLogger("server")


class MigrationRunner:
    """The migrator behind a one-thread executor, reporting its phase to whoever serves."""

    def __init__(
        self,
        settings: Settings,
        phase: Callable[[], Phase],
        set_phase: Callable[[Phase], None],
        events: MigrationEvents | None = None,
    ):
        self.phase, self.set_phase = phase, set_phase
        self.settings = settings
        self.events = events or MigrationEvents()
        # Revisions block, and one at a time is all a database takes anyway.
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="migrator")
        self.stop = threading.Event()  # set at shutdown: a running upgrade stops after its current revision
        self.running = False
        self.last_upgrade: dict | None = None  # what GET /admin/migrations reports

    @functools.cached_property
    def migrator(self) -> "Migrator":
        """The migrator, made on first use (on the executor): a start at head never loads Alembic."""
        return make_migrator(self.settings, on_phase=self._on_phase, events=self.events)

    @property
    def last_snapshot(self) -> dict | None:
        """The latest snapshot this process took before upgrading (GET /admin/migrations)."""
        if "migrator" not in self.__dict__:
            return None  # nothing migrated in this process
        snapshot = self.migrator.last_snapshot
        return snapshot.as_json() if snapshot else None

    async def status(self) -> Status:
        return await self._in_executor(lambda: self.migrator.status())

    def _on_phase(self, phase: Phase) -> None:
        # A serving process goes on serving while an admin-triggered upgrade runs beside it.
        if self.phase() != Phase.READY:
            self.set_phase(phase)

    async def upgrade(self) -> UpgradeResult:
        """Bring the database to head; the phase becomes ready, or what the error's family says."""
        started_at, started = datetime.now(UTC), time.monotonic()
        phase_before = self.phase()
        self.running = True
        try:
            result = await self._in_executor(lambda: self.migrator.upgrade(self.stop))
        except ServiceError as exc:
            self.last_upgrade = _record(started_at, time.monotonic() - started, exc.applied, error=str(exc))
            self.events.upgrade_failed(exc.applied)
            if self.phase() != Phase.READY:
                self.set_phase(outcome(exc).phase or phase_before)
            raise
        finally:
            self.running = False
        self.last_upgrade = _record(started_at, result.seconds, result.applied, error=None)
        self.events.upgraded(result)
        if result.status.at_head:
            self.set_phase(Phase.READY)
        if result.applied:
            log.info(
                "upgraded to %s: applied %s in %.2f s",
                ", ".join(result.status.current),
                ", ".join(r.id for r in result.applied),
                result.seconds,
            )
        else:
            log.info("database already at head (%s)", ", ".join(result.status.current))
        return result

    async def _in_executor(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        self.stop.set()
        self.executor.shutdown(wait=True)


def make_migrator(settings: Settings, **options) -> "Migrator":
    """A Migrator, importing Alembic's runtime only now; an unreadable alembic.ini is a SettingsError."""
    from alembic.util.exc import CommandError  # importing alembic loads its runtime: only when there is work

    from server.migrations.upgrade import Migrator

    try:
        return Migrator(settings, **options)
    except CommandError as exc:
        raise SettingsError(f"--alembic-config {settings.alembic_config}: {exc}") from None


def _record(started_at: datetime, seconds: float, applied, error: str | None) -> dict:
    return {
        "started_at": started_at.isoformat(),
        "seconds": round(seconds, 3),
        "applied": [{"id": r.id, "message": r.message, "seconds": round(r.seconds, 3)} for r in applied],
        "error": error,
    }
