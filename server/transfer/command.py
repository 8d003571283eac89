"""`python -m server.transfer`: check both sides, copy in one transaction, verify, then commit."""

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from server.errors import EXIT_FAILED, EXIT_OK, ServiceError, TransferFailed, describe
from server.logs import configure_logging
from server.migrations.heads import if_heads, read_heads
from server.models import metadata
from server.settings import Settings, SettingsError, load_settings
from server.transfer import postgres, sqlite
from server.transfer.plan import TablePlan, make_plans
from server.transfer.postgres import PostgresSource, PostgresTarget
from server.transfer.sqlite import SqliteSource, SqliteTarget
from server.transfer.stream import Reader, Source, Target
from server.transfer.verify import TableFigures

log = logging.getLogger("server.transfer")  # not __name__: run with -m, that is "__main__"
T = TypeVar("T")

DESCRIPTION = "Copy every table from one database to another in one transaction, verified before it commits."

DEFAULT_BATCH_SIZE = 5_000
PROGRESS_EVERY = 2.0  # seconds between progress log lines when stderr is not a terminal
PASSWORD_IN_URL = re.compile(r"(://[^/@\s:]*:)[^@\s]*@")

# Each dialect: how to read it, how to write it, which revisions it records. A third database is one
# module and a line in each here.
SOURCES: dict[str, Callable[[Settings], Source]] = {"sqlite": SqliteSource, "postgresql": PostgresSource}
TARGETS: dict[str, Callable[[Settings, Callable[[], None]], Target]] = {
    "sqlite": SqliteTarget,
    "postgresql": lambda settings, _stop_here: PostgresTarget(settings),
}
VERSIONS: dict[str, Callable[[Settings], Awaitable[list[str] | None]]] = {
    "sqlite": sqlite.read_versions,
    "postgresql": postgres.read_versions,
}


class Interrupt:
    """SIGINT and SIGTERM: stop the transfer and roll it back, unless it is already committing.

    Plain signal handlers, not the event loop's: while the target is fed from a plain generator the loop
    may not run for a while, but the reader's waits look at `requested` and stop there. The loop's turn
    comes at the next await: then the task is cancelled, unless a wait has stopped it already.
    """

    def __init__(self):
        self.signum: int | None = None
        self.requested = threading.Event()
        self.committing = False  # from here on a signal is noted, and the commit finishes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._stopped = False  # the transfer has stopped for it: cancelling again would cancel its report

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def attach(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
        self._loop, self._task = loop, task
        loop.set_exception_handler(self._on_loop_error)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        # Once stopping, the target's backend is ended under the copy, and the driver's protocol may fail on
        # data already on its way: expected, and said in the one line the interrupt reports.
        if self.requested.is_set():
            log.debug("after %s: %s", self.name, context.get("message"))
        else:
            loop.default_exception_handler(context)

    def stop_here(self) -> None:
        """Where the code waits outside the event loop: raise the cancellation the signal asked for."""
        if self.requested.is_set() and not self._stopped:
            self._stopped = True
            raise asyncio.CancelledError

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _on_signal(self, signum: int, _frame) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        if self.committing:
            return
        self.requested.set()
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: we are on our way out anyway
                self._loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        if not self._stopped and self._task is not None and not self._task.done():
            self._stopped = True
            self._task.cancel()


class Progress:
    """A bar per table on a terminal; otherwise a log line every few seconds. Both show rows/s."""

    def __init__(self, table: str, total: int, bar: bool):
        self.table, self.total, self.done = table, total, 0
        self.started = self.reported = time.monotonic()
        self.bar = None
        if bar:
            from tqdm import tqdm  # only on a terminal: the import is not free

            self.bar = tqdm(total=total, desc=table, unit=" rows", unit_scale=True, file=sys.stderr)
        else:
            log.info("%s: copying %s rows", table, f"{total:,}")

    def update(self, rows: int) -> None:
        self.done += rows
        if self.bar is not None:
            self.bar.update(rows)
            return
        now = time.monotonic()
        if now - self.reported >= PROGRESS_EVERY:
            self.reported = now
            share = f" ({self.done / self.total:.0%})" if self.total else ""
            rate = self.done / (now - self.started)
            log.info(
                "%s: %s of %s rows%s, %s rows/s", self.table, f"{self.done:,}", f"{self.total:,}", share, f"{rate:,.0f}"
            )

    def close(self) -> float:
        if self.bar is not None:
            self.bar.close()
        return time.monotonic() - self.started


class Transfer:
    def __init__(
        self, source: Settings, target: Settings, replace: bool, batch_size: int, bar: bool, interrupt: Interrupt
    ):
        check_urls(source.database_url, target.database_url)
        self.source_settings, self.target_settings = source, target
        self.source = SOURCES[source.database_url.get_backend_name()](source)
        self.target = TARGETS[target.database_url.get_backend_name()](target, interrupt.stop_here)
        self.replace, self.batch_size, self.bar = replace, batch_size, bar
        self.interrupt = interrupt
        self.plans = make_plans(metadata.sorted_tables)
        self.figures: list[TableFigures] = []
        self.copying = False  # the target's transaction has begun

    async def run(self) -> None:
        self.source.check_reachable()
        # Most often both are at head already: one query each, at once, and Alembic is never loaded.
        source_at, target_at = await asyncio.gather(at_head(self.source_settings), at_head(self.target_settings))
        heads = source_at or await self._source_at_head()
        if target_at is None:
            await self._target_to_head()
        reader = Reader(self.source, self.plans, self.batch_size, self.target.takes, self.interrupt.stop_here)
        try:
            snapshot = reader.start()
            if set(snapshot.versions) != set(heads):  # migrated between the status check and the snapshot
                raise TransferFailed(
                    f"source moved to {', '.join(snapshot.versions)} during the check: run the transfer again"
                )
            await self._copy_all(reader)
        finally:
            reader.close()
            await self.target.close()  # rolls back whatever is not committed

    async def _copy_all(self, reader: Reader) -> None:
        started = time.monotonic()
        self.copying = True
        await self.target.begin(self.plans, self.replace)
        for plan in self.plans:
            self.figures.append(await self._copy_table(reader, plan))
        print_figures(self.figures)
        if not all(f.match for f in self.figures):
            bad = ", ".join(f.name for f in self.figures if not f.match)
            raise TransferFailed(f"verification failed for {bad}: rolled back, the target is as it was")
        self.interrupt.committing = True
        await self.target.commit(self.plans)
        rows = sum(f.source.rows for f in self.figures)
        seconds = time.monotonic() - started
        log.info(
            "committed: %d table(s), %s rows in %.2f s (%s rows/s, verification included)",
            len(self.figures),
            f"{rows:,}",
            seconds,
            f"{rows / seconds:,.0f}",
        )

    async def _copy_table(self, reader: Reader, plan: TablePlan) -> TableFigures:
        table = reader.table()
        progress = Progress(plan.name, table.rows, self.bar)
        reader.on_rows = progress.update
        try:
            target = await self.target.copy(plan, table)
        finally:
            seconds = progress.close()
        if table.check is None:
            raise TransferFailed(f"target: stopped before the end of {plan.name}")
        rows = table.check.rows
        rate = f"{rows / seconds:,.0f}" if seconds else "-"
        log.info("%s: copied and checked %s rows in %.2f s (%s rows/s)", plan.name, f"{rows:,}", seconds, rate)
        return TableFigures(plan.name, table.check, target)

    async def _source_at_head(self) -> tuple[str, ...]:
        from server.migrations import Migrator  # Alembic's runtime: only for a side not at head

        status = await self._in_thread("source", self.source_settings, Migrator(self.source_settings).status, True)
        if not status.at_head:
            url = self.source_settings.database_url.render_as_string(hide_password=True)
            raise TransferFailed(
                f"source is at {', '.join(status.current) or 'base (empty)'}, not at head "
                f"({', '.join(status.heads)}): upgrade it first, e.g. "
                f"python run.py --migrate=only --database-url={url}"
            )
        return status.heads

    async def _target_to_head(self) -> None:
        from server.migrations import Migrator

        upgrade = Migrator(self.target_settings).upgrade
        result = await self._in_thread("target", self.target_settings, upgrade, self.interrupt.requested)
        if result.applied:
            log.info("target upgraded to %s", ", ".join(result.status.current))

    async def _in_thread(self, side: str, settings: Settings, work: Callable[..., T], *args: object) -> T:
        # The migrator runs its own event loop, so it gets a thread, as in the server. On a signal the
        # upgrade stops between revisions, and this waits for it rather than leaving it half done.
        future = asyncio.get_running_loop().run_in_executor(None, work, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # interrupt.requested is set: it stops between revisions
                await future
            raise
        except ServiceError as exc:
            self.interrupt.stop_here()  # the upgrade stopped between revisions for a signal
            raise TransferFailed(f"{side}: {exc}") from None
        except (DBAPIError, sqlite3.Error, OSError) as exc:
            raise TransferFailed(f"{side}: {describe(exc, settings.database_url)}") from None


async def at_head(settings: Settings) -> tuple[str, ...] | None:
    """The database's revisions if they are the heads; None for anything else, which the migrator then
    looks at closer (waiting for the database, wording what is wrong). Through the transfer's own drivers:
    SQLAlchemy's async engine would cost more to import and set up than the whole check."""
    heads = read_heads(settings.alembic_config)
    if heads is None:
        return None
    current = await VERSIONS[settings.database_url.get_backend_name()](settings)
    return None if current is None else if_heads(current, heads)


def check_urls(source: URL, target: URL) -> None:
    """Refuse the same database twice, and databases no module here speaks."""
    for side, url in (("source", source), ("target", target)):
        if url.get_backend_name() not in SOURCES:
            raise TransferFailed(f"{side}: {url.get_backend_name()} is not supported (sqlite, postgresql)")
    if source.get_backend_name() == target.get_backend_name() and _identity(source) == _identity(target):
        raise TransferFailed(
            f"source and target are the same database ({source.render_as_string(hide_password=True)}): nothing to do"
        )


def _identity(url: URL) -> tuple:
    if url.get_backend_name() == "sqlite":
        return (os.path.realpath(url.database),)
    return (url.host or "localhost", url.port or 5432, url.database, url.query.get("host"))


def print_figures(figures: list[TableFigures]) -> None:
    checksums = f"{'source checksum':<16}  {'target checksum':<16}"
    print(f"{'table':<20} {'source rows':>12} {'target rows':>12}  {checksums}  verdict")
    for f in figures:
        print(
            f"{f.name:<20} {f.source.rows:>12,} {f.target.rows:>12,}  {f.source.checksum[:16]:<16}  "
            f"{f.target.checksum[:16]:<16}  {'match' if f.match else 'MISMATCH'}",
            flush=True,
        )


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise TransferFailed(f"bad arguments: {mask_passwords(message)} (see --help)")


def mask_passwords(text: str) -> str:
    """argparse and the settings echo what they were given: URLs in it lose their passwords."""
    return PASSWORD_IN_URL.sub(r"\1***@", text)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = _ArgumentParser(prog="python -m server.transfer", description=DESCRIPTION)
    parser.add_argument("source", metavar="SOURCE_URL", help="sqlite:///path/app.db or postgresql://… (at head)")
    parser.add_argument(
        "target", metavar="TARGET_URL", help="sqlite:///path/new.db or postgresql://… (upgraded to head)"
    )
    parser.add_argument(
        "--replace", action="store_true", help="empty the target's tables first, in the same transaction"
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per read from the source")
    parser.add_argument("--db-wait", help="seconds to keep retrying an unreachable database [DB_WAIT] (default 30)")
    parser.add_argument(
        "--migration-lock-timeout", help="seconds to wait for another migrator [MIGRATION_LOCK_TIMEOUT]"
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be 1 or more")
    return args


def load_side(url: str, args: argparse.Namespace) -> Settings:
    """Settings for one side, read as the server reads them: flags, then the environment, then defaults."""
    flags = [f"--database-url={url}"]
    for name, value in (("db-wait", args.db_wait), ("migration-lock-timeout", args.migration_lock_timeout)):
        if value is not None:
            flags.append(f"--{name}={value}")
    return load_settings(flags)


def main(argv: Sequence[str]) -> int:
    # What the imports made (SQLAlchemy: a few hundred thousand objects) lives until exit. Frozen, the
    # garbage collector stops walking it on every full collection the copy's row tuples set off; __main__
    # paused the collector during the imports.
    gc.freeze()
    gc.enable()
    configure_logging()
    interrupt = Interrupt()
    interrupt.install()  # before asyncio.run, which then leaves SIGINT to it
    try:
        args = parse_args(argv)
        source, target = load_side(args.source, args), load_side(args.target, args)
        transfer = Transfer(source, target, args.replace, args.batch_size, sys.stderr.isatty(), interrupt)
    except SettingsError as exc:
        log.error("bad settings: %s", mask_passwords(str(exc)))
        return EXIT_FAILED
    except TransferFailed as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    return asyncio.run(run(transfer))


async def run(transfer: Transfer) -> int:
    interrupt = transfer.interrupt
    interrupt.attach(asyncio.get_running_loop(), asyncio.current_task())
    try:
        interrupt.stop_here()  # a signal that came before the loop ran
        await transfer.run()
    except asyncio.CancelledError:
        if interrupt.signum is None:
            raise
        if transfer.copying:
            log.error("interrupted by %s: nothing was committed, the target is as it was", interrupt.name)
        else:  # revisions the target's upgrade had finished stay, as when a server start is interrupted
            log.error("interrupted by %s before the copy began: nothing was copied", interrupt.name)
        return 128 + interrupt.signum
    except TransferFailed as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except Exception as exc:  # a bug: still one line (the traceback at debug level), still nothing committed
        log.debug("transfer failed", exc_info=True)
        log.error("transfer failed: %s", describe(exc, transfer.target_settings.database_url))
        return EXIT_FAILED
    if interrupt.signum is not None:
        log.warning("%s came while committing: the transfer finished first", interrupt.name)
    return EXIT_OK
