"""Logging for every command of the service: one format, Alembic's per-connection chatter dropped."""

import logging


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(process)d %(name)s] %(message)s")
    # One line per request would cost more than the request; errors (4xx, 5xx) are still logged.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").addFilter(_drop_per_connection_lines)
    logging.getLogger().handlers[0].addFilter(EscapeControlCharacters())


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
