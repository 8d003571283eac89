"""Logging for every command of the service: one format, Alembic's per-connection chatter dropped."""

import logging


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(process)d %(name)s] %(message)s")
    # One line per request would cost more than the request; errors (4xx, 5xx) are still logged.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").addFilter(_drop_per_connection_lines)


def _drop_per_connection_lines(record: logging.LogRecord) -> bool:
    # Alembic says "Context impl ..." and "Will assume ... DDL" on every status read: noise in a server log.
    return not str(record.msg).startswith(("Context impl", "Will assume"))
