"""Logging for every command of the service: one format, Alembic's per-connection chatter dropped."""

import contextvars
import logging

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d %(name)s] %(message)s"
# The request being served, for its log lines (set by the handlers; each request runs in a task of its own).
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def configure_logging(log_format: str = "text") -> None:
    """Log to stderr as text or (--log-format=json) one JSON object per line; again once settings are known."""
    logging.basicConfig(level=logging.INFO, format=TEXT_FORMAT, force=True)
    handler = logging.getLogger().handlers[0]
    handler.setFormatter(make_json_formatter() if log_format == "json" else TextFormatter(TEXT_FORMAT))
    handler.addFilter(add_request_id)
    # Python's own warnings too, or they would be the one line of a JSON log that is not JSON.
    logging.captureWarnings(log_format == "json")
    # One line per request would cost more than the request; errors (4xx, 5xx) are still logged.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").addFilter(_drop_per_connection_lines)
    # Alembic 1.17 and newer name each of its built-in plugins as they load: seven lines of every upgrade.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.getLogger().handlers[0].addFilter(EscapeControlCharacters())


def make_json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "{levelname}{name}{message}{process}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
        timestamp="time",  # UTC, ISO 8601
    )


class TextFormatter(logging.Formatter):
    """The text format, with the request's ID at the end of the lines logged while serving one."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [request {request_id}]" if request_id else line


def add_request_id(record: logging.LogRecord) -> bool:
    if getattr(record, "request_id", None) is None:
        request_id = request_id_var.get()
        if request_id is not None:
            record.request_id = request_id
    return True


def _drop_per_connection_lines(record: logging.LogRecord) -> bool:
    # Alembic says "Context impl ..." and "Will assume ... DDL" on every status read: noise in a server log.
    return not str(record.msg).startswith(("Context impl", "Will assume"))


class EscapeControlCharacters(logging.Filter):
    """Control characters from outside (a URL, a path) reach the log escaped: a C1 byte such as 0x85 (NEL)
    or 0x9b (CSI) would otherwise end a line or drive the terminal of whoever reads the log. A traceback
    (the record's exc_text) keeps its lines."""

    ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if code != 0x09}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = message.translate(self.ESCAPES)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True
