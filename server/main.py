"""The startup sequence and shutdown: listen, migrate in an executor, serve, drain, exit."""

import asyncio
import concurrent.futures
import logging
import os
import signal
import threading
import time

import tornado.httpserver
import tornado.netutil
from alembic.util.exc import CommandError

from server.app import make_app
from server.db import make_engine, make_session_factory
from server.migrator import Interrupted, MigrationError, Migrator, UnknownRevision, describe
from server.settings import Settings, SettingsError, load_settings
from server.state import ServiceState
from server.workers import run_workers

log = logging.getLogger("server")

EXIT_OK, EXIT_FAILED, EXIT_PENDING = 0, 1, 3
OFF_POLL_INTERVAL = 1.0
SHUTDOWN_GRACE = 20.0  # in-flight requests get this long; below Kubernetes' default 30 s before SIGKILL
MAX_BODY_SIZE = 64 * 1024  # a row is a 50-character name


def main(argv: list[str]) -> int:
    configure_logging()
    try:
        settings = load_settings(argv[1:])
    except SettingsError as exc:
        log.error("bad settings: %s", exc)
        return EXIT_FAILED
    try:
        if settings.migrate == "check":
            return check(settings)
        if settings.migrate == "only":
            return migrate_only(settings)
        sockets = tornado.netutil.bind_sockets(settings.port, settings.address)
    except (MigrationError, CommandError) as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.address, settings.port, exc.strerror or exc)
        return EXIT_FAILED
    if settings.processes == 1:
        return asyncio.run(serve(settings, sockets))
    # Every worker runs the same startup; the migration lock lets one migrate while the rest wait, live.
    return run_workers(settings.processes or os.cpu_count() or 1, lambda _index: asyncio.run(serve(settings, sockets)))


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(process)d %(name)s] %(message)s")
    # One line per request would cost more than the request; errors (4xx, 5xx) are still logged.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").addFilter(_drop_per_connection_lines)


def _drop_per_connection_lines(record: logging.LogRecord) -> bool:
    # Alembic says "Context impl ..." and "Will assume ... DDL" on every status read: noise in a server log.
    return not record.msg.startswith(("Context impl", "Will assume"))


def check(settings: Settings) -> int:
    """--migrate=check: change nothing; 0 at head, 3 when revisions are pending, 1 when it cannot tell."""
    status = Migrator(settings).status(wait=True)
    if status.at_head:
        log.info("database is at head (%s)", ", ".join(status.current))
        return EXIT_OK
    log.info(
        "database is at %s; pending: %s",
        ", ".join(status.current) or "base (empty)",
        ", ".join(f"{r.id} ({r.message})" for r in status.pending),
    )
    return EXIT_PENDING


def migrate_only(settings: Settings) -> int:
    """--migrate=only: upgrade and exit, never listening."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        result = Migrator(settings).upgrade(stop)
    except Interrupted as exc:
        log.info("%s", exc)
        return EXIT_OK
    log_upgrade(result)
    return EXIT_OK


def log_upgrade(result) -> None:
    if result.applied:
        log.info(
            "upgraded to %s: applied %s in %.2f s",
            ", ".join(result.status.current),
            ", ".join(r.id for r in result.applied),
            result.seconds,
        )
    else:
        log.info("database already at head (%s)", ", ".join(result.status.current))


async def serve(settings: Settings, sockets) -> int:
    state = ServiceState("migrating" if settings.migrate == "auto" else "waiting")
    engine = make_engine(settings.database_url)
    # The migrator's own thread: revisions block, and one at a time is all a database takes anyway.
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="migrator")
    try:
        migrator = Migrator(settings, on_phase=state.set_phase)
    except CommandError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    server = tornado.httpserver.HTTPServer(make_app(make_session_factory(engine), state), max_body_size=MAX_BODY_SIZE)
    server.add_sockets(sockets)
    log.info("listening on http://%s:%d", settings.address, sockets[0].getsockname()[1])

    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    stop_migrating = threading.Event()
    startup = asyncio.create_task(bring_to_head(settings, migrator, state, executor, stop_migrating))
    stopping = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({startup, stopping}, return_when=asyncio.FIRST_COMPLETED)

    exit_code = EXIT_OK
    if not startup.done():
        stop_migrating.set()  # the running revision finishes or rolls back, then we stop
        await asyncio.wait({startup})
    try:
        startup.result()
    except Interrupted as exc:
        log.info("%s", exc)
    except asyncio.CancelledError:
        pass
    except MigrationError as exc:
        log.error("%s", exc)
        exit_code = EXIT_FAILED
    except Exception as exc:
        log.debug("startup failed", exc_info=True)
        log.error("startup failed: %s", describe(exc, settings))
        exit_code = EXIT_FAILED
    else:
        await stopping
    log.info("shutting down")
    server.stop()
    await drain(state)
    await server.close_all_connections()
    await engine.dispose()
    executor.shutdown(wait=True)
    return exit_code


async def bring_to_head(settings, migrator, state, executor, stop) -> None:
    """auto: upgrade in the executor; off: poll until someone else has. Then ready."""
    loop = asyncio.get_running_loop()
    if settings.migrate == "auto":
        log_upgrade(await loop.run_in_executor(executor, migrator.upgrade, stop))
    else:
        await wait_for_head(migrator, state, executor, stop)
    state.set_phase("ready")
    log.info("ready")


async def wait_for_head(migrator, state, executor, stop) -> None:
    loop = asyncio.get_running_loop()
    reported = None
    while not stop.is_set():
        try:
            status = await loop.run_in_executor(executor, migrator.status)
        except (MigrationError, UnknownRevision) as exc:
            state.set_phase("unavailable" if not isinstance(exc, UnknownRevision) else "waiting")
            message = str(exc)
        else:
            if status.at_head:
                return
            state.set_phase("waiting")
            message = f"waiting for the database to reach head; pending: {', '.join(r.id for r in status.pending)}"
        if message != reported:
            log.warning("%s", message)
            reported = message
        await asyncio.sleep(OFF_POLL_INTERVAL)
    raise Interrupted("stopped on request while waiting for the database to reach head")


async def drain(state: ServiceState) -> None:
    deadline = time.monotonic() + SHUTDOWN_GRACE
    while state.in_flight > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if state.in_flight:
        log.warning("%d requests still running after %.0f s; closing them", state.in_flight, SHUTDOWN_GRACE)
