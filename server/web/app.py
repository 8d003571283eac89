"""The route table."""

import functools
import logging

import tornado.log
import tornado.web

from server.db import SessionFactory
from server.migrations.runner import MigrationRunner
from server.web.admin import MigrationsHandler, UpgradeHandler
from server.web.body_limit import BodyLimit
from server.web.handlers import NotFoundHandler, RowsHandler
from server.web.health import LiveHandler, ReadyHandler
from server.web.metrics import Metrics, MetricsHandler
from server.web.state import ServiceState


def make_app(
    session_factory: SessionFactory,
    state: ServiceState,
    runner: MigrationRunner | None = None,
    admin_token: str | None = None,
    metrics: Metrics | None = None,
) -> "Application":
    data = dict(state=state, session_factory=session_factory)
    admin = dict(state=state, runner=runner, admin_token=admin_token if runner else None)
    routes = [
        (r"/", RowsHandler, data),
        (r"/health/live", LiveHandler, dict(state=state)),
        (r"/health/ready", ReadyHandler, data),
        (r"/admin/migrations", MigrationsHandler, admin),
        (r"/admin/migrations/upgrade", UpgradeHandler, admin),
    ]
    if metrics is not None:
        routes.append((r"/metrics", MetricsHandler, dict(state=state, metrics=metrics)))
        metrics.precreate([handler for _, handler, _ in routes] + [NotFoundHandler])
    return Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args=dict(state=state),
        log_function=log_request if metrics is None else functools.partial(log_and_count, metrics),
    )


class Application(tornado.web.Application):
    """Tornado's Application, with every request's body held to BodyLimit."""

    def start_request(self, server_conn, request_conn):
        return BodyLimit(super().start_request(server_conn, request_conn), request_conn)


def log_and_count(metrics: Metrics, handler: tornado.web.RequestHandler) -> None:
    metrics.observe_request(handler)
    log_request(handler)


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log, except that a probe's 503 is a warning, not an error, and while the service is
    still starting it is what the probe is there to see: not logged (DEBUG), the migrator's lines say more.
    A probe every few milliseconds during a long upgrade would otherwise write a line each and slow it."""
    status = handler.get_status()
    if status < 400:
        level = logging.INFO
    elif status == 503 and handler.request.path.startswith("/health/"):
        state = getattr(handler, "state", None)
        level = logging.DEBUG if state is not None and state.starting else logging.WARNING
    elif status < 500:
        level = logging.WARNING
    else:
        level = logging.ERROR
    if tornado.log.access_log.isEnabledFor(level):
        request = handler.request
        duration_ms = 1000.0 * request.request_time()
        tornado.log.access_log.log(
            level,
            "%d %s %s (%s) %.2fms",
            status,
            request.method,
            request.uri,
            request.remote_ip,
            duration_ms,
            # Fields of their own for --log-format=json; the text format has them in the message.
            extra=dict(
                method=request.method,
                path=request.path,
                status=status,
                duration_ms=round(duration_ms, 2),
                request_id=getattr(handler, "request_id", None),
            ),
        )
