"""The startup sequence and shutdown: listen, migrate in an executor, serve, drain, exit."""

import asyncio
import contextlib
import gc
import logging
import os
import signal

import tornado.netutil

from server.db import make_serving_engine, make_session_factory
from server.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PENDING,
    Interrupted,
    Phase,
    ServiceError,
    SettingsError,
    UnknownRevision,
    describe,
    outcome,
)
from server.logs import configure_logging
from server.migrations.events import Status
from server.migrations.heads import current_if_at_head
from server.migrations.runner import MigrationRunner, make_migrator
from server.settings import Settings, load_settings
from server.web.app import make_app
from server.web.body_limit import DRAIN_LIMIT
from server.web.connections import LISTEN_BACKLOG, GuardedHTTPServer, defer_accept, make_http_server
from server.web.metrics import make_metrics, multiprocess_dir, worker_exited
from server.web.probes import StartupProbes
from server.web.state import ServiceState
from server.workers import run_workers

log = logging.getLogger("server")
OFF_POLL_INTERVAL = 1.0
SHUTDOWN_GRACE = 20.0  # in-flight requests get this long; below Kubernetes' default 30 s before SIGKILL


def main(argv: list[str]) -> int:
    # What importing made lives as long as the process: out of the collector's way (run.py paused it), and
    # shared copy-on-write with --processes workers rather than touched by each one's collections.
    gc.freeze()
    gc.enable()
    configure_logging()
    try:
        settings = load_settings(argv[1:])
    except SettingsError as exc:
        log.error("bad settings: %s", exc)
        return EXIT_FAILED
    configure_logging(settings.log_format)
    try:
        if settings.migrate == "check":
            return check(settings)
        if settings.migrate == "only":
            return migrate_only(settings)
        sockets = tornado.netutil.bind_sockets(settings.port, settings.address, backlog=LISTEN_BACKLOG)
        defer_accept(sockets, settings.idle_timeout)
    except ServiceError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.address, settings.port, exc.strerror or exc)
        return EXIT_FAILED
    if settings.processes == 1:
        return asyncio.run(serve(settings, sockets))
    # Every worker runs the same startup; the migration lock lets one migrate while the rest wait, live.
    with multiprocess_dir():  # one scrape of any worker covers them all
        count = settings.processes or os.cpu_count() or 1
        return run_workers(count, lambda _index: asyncio.run(serve(settings, sockets)), on_exit=worker_exited)


def check(settings: Settings) -> int:
    """--migrate=check: change nothing; 0 at head, 3 when revisions are pending, 1 when it cannot tell."""
    status = make_migrator(settings).status(wait=True)
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

    async def upgrade() -> None:
        state = ServiceState(Phase.MIGRATING)
        runner = MigrationRunner(settings, lambda: state.phase, state.set_phase)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, runner.stop.set)
        try:
            await runner.upgrade()
        except Interrupted as exc:
            log.info("%s", exc)
        finally:
            runner.close()

    asyncio.run(upgrade())
    return EXIT_OK


async def serve(settings: Settings, sockets) -> int:
    state = ServiceState(Phase.MIGRATING if settings.migrate == "auto" else Phase.WAITING)
    metrics = make_metrics()
    runner = MigrationRunner(settings, lambda: state.phase, state.set_phase, metrics)
    engine = make_serving_engine(settings)
    if metrics is not None:
        metrics.watch(state, engine)
    app = make_app(make_session_factory(engine, settings), state, runner, settings.admin_token, metrics)
    server = make_http_server(app, settings, DRAIN_LIMIT, StartupProbes(state, metrics).answer)
    server.add_sockets(sockets)
    log.info("listening on http://%s:%d", settings.address, sockets[0].getsockname()[1])

    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()

    def request_stop(_signum, _frame) -> None:
        # A plain handler, not loop.add_signal_handler: asyncio.run resets its handlers to the default
        # (death) while closing the loop, and with --processes a group signal reaches a worker twice
        # (directly, and forwarded by the parent).
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are on our way out already
            loop.call_soon_threadsafe(stop_requested.set)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    startup = asyncio.create_task(bring_to_head(settings, runner, state, engine))
    stopping = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({startup, stopping}, return_when=asyncio.FIRST_COMPLETED)

    exit_code = EXIT_OK
    if not startup.done():
        runner.stop.set()  # a revision running now finishes or rolls back, then we stop
    try:
        await startup
    except Interrupted as exc:
        log.info("%s", exc)
    except ServiceError as exc:
        log.error("%s", exc)
        exit_code = outcome(exc).exit_status
    except Exception as exc:
        log.debug("startup failed", exc_info=True)
        log.error("startup failed: %s", describe(exc, settings.database_url))
        exit_code = EXIT_FAILED
    else:
        await stopping
        runner.stop.set()  # only now: the admin upgrade runs revisions through this runner while we serve
    log.info("shutting down")
    server.stop()
    await drain(server)
    await server.close_all_connections()
    await engine.dispose()
    runner.close()
    if metrics is not None:
        metrics.close()
    return exit_code


async def bring_to_head(settings: Settings, runner: MigrationRunner, state: ServiceState, engine) -> None:
    """At head already (most starts): ready at once. Else auto: upgrade in the executor; off: poll until
    someone else has. Then ready."""
    current = await current_if_at_head(engine, settings.alembic_config)  # no Alembic, one query
    if current is not None:
        runner.events.status_read(Status(current=current, heads=current, pending=()))
        log.info("database already at head (%s)", ", ".join(current))
    elif settings.migrate == "auto":
        await runner.upgrade()
    else:
        await wait_for_head(runner, state)
    state.set_phase(Phase.READY)
    log.info("ready")


async def wait_for_head(runner: MigrationRunner, state: ServiceState) -> None:
    reported = None
    while not runner.stop.is_set():
        try:
            status = await runner.status()
        except UnknownRevision as exc:
            state.set_phase(Phase.WAITING)
            message = str(exc)
        except ServiceError as exc:
            state.set_phase(Phase.UNAVAILABLE)
            message = str(exc)
        else:
            if status.at_head:
                return
            if state.phase != Phase.FAILED:  # an admin-triggered upgrade failed: say so until one succeeds
                state.set_phase(Phase.WAITING)
            message = f"waiting for the database to reach head; pending: {', '.join(r.id for r in status.pending)}"
        if message != reported:
            log.warning("%s", message)
            reported = message
        await asyncio.sleep(OFF_POLL_INTERVAL)
    raise Interrupted("stopped on request while waiting for the database to reach head")


async def drain(server: GuardedHTTPServer) -> None:
    """No new request is read on any connection; the ones in flight get SHUTDOWN_GRACE to answer."""
    still_open = await server.drain(SHUTDOWN_GRACE)
    if still_open:
        log.warning("%d connections still busy after %.0f s; closing them", still_open, SHUTDOWN_GRACE)
