"""The JSON handler every endpoint builds on (errors as {"error": message}), and the table's endpoint."""

import asyncio
import functools
import itertools
import os
import re
import sqlite3

import orjson
import tornado.log
import tornado.web
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from server.db import SessionFactory, is_busy
from server.errors import DatabaseBusy, DatabaseUnavailable
from server.logs import request_id_var
from server.models import NAME_MAX_LENGTH
from server.web.queries import fetch_page, insert_row
from server.web.state import ServiceState

PAGE_LIMIT_DEFAULT = 50
PAGE_LIMIT_MAX = 1000
ID_MAX = 2**31 - 1  # my_table.id is an INTEGER on PostgreSQL
RETRY_AFTER_SECONDS = "2"
DATABASE_BUSY = "database busy: it is locked by another connection"
REQUEST_ID_HEADER = "X-Request-ID"
# A caller's ID is kept when it is visible ASCII and short: it goes into every log line of the request.
ACCEPTED_REQUEST_ID = re.compile(r"[!-~]{1,128}")
DATABASE_DOWN = (
    DBAPIError,
    PoolTimeoutError,
    OSError,
    asyncio.TimeoutError,
    DatabaseUnavailable,  # the page read's own, from the driver's disconnect errors (web/queries.py)
    DatabaseBusy,  # and from PostgreSQL's lock_timeout
    sqlite3.Error,  # raised as it is by the statements sqlite3 runs itself (web/queries.py)
)


OUR_WORDS = {
    400: "bad request: the request line, query string, headers or body could not be read",
    405: "method not allowed",
}


# A new request ID: this process's random prefix and a counter, 32 hex digits as a uuid4 has; unique across
# processes and replicas, and far cheaper per request. A forked worker draws a prefix of its own.
_request_id_prefix = os.urandom(8).hex()
_request_numbers = itertools.count(1)


def _new_request_id_prefix() -> None:
    global _request_id_prefix, _request_numbers
    _request_id_prefix, _request_numbers = os.urandom(8).hex(), itertools.count(1)


os.register_at_fork(after_in_child=_new_request_id_prefix)


def new_request_id() -> str:
    return f"{_request_id_prefix}{next(_request_numbers):016x}"


class ApiError(tornado.web.HTTPError):
    """An error answered as {"error": message, **details}, with headers that survive send_error's clear()."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None, details=None):
        super().__init__(status_code, "%s", message)
        self.message = message
        self.headers = headers or {}
        self.details: dict = details or {}


class JsonHandler(tornado.web.RequestHandler):
    def initialize(self, state: ServiceState, **_):
        self.state = state

    def set_default_headers(self) -> None:
        # Here, not in prepare: send_error's clear() runs this again, so error answers carry the ID too.
        self.set_header("Content-Type", "application/json")
        self.set_header(REQUEST_ID_HEADER, self.request_id)

    @functools.cached_property
    def request_id(self) -> str:
        """The caller's X-Request-ID when acceptable, else a new one."""
        given = self.request.headers.get(REQUEST_ID_HEADER, "")
        return given if given and ACCEPTED_REQUEST_ID.fullmatch(given) else new_request_id()

    def prepare(self) -> None:
        # The request runs in a task of its own: the ID stays with this request's log lines only.
        request_id_var.set(self.request_id)
        self.state.in_flight += 1  # shutdown waits for this to reach zero
        self._counted = True

    def on_finish(self) -> None:
        if getattr(self, "_counted", False):
            self.state.in_flight -= 1

    def write_json(self, body: object, status: int = 200) -> None:
        self.set_status(status)
        # SQLite hands back naive datetimes; CURRENT_TIMESTAMP is UTC, so say so.
        self.finish(orjson.dumps(body, option=orjson.OPT_NAIVE_UTC))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            message = exc.message
            for name, value in exc.headers.items():
                self.set_header(name, value)
        elif isinstance(exc, PoolTimeoutError):
            # Every pooled connection stayed busy for --pool-timeout: shed this request, don't queue it.
            self.set_status(503)
            self.set_header("Retry-After", RETRY_AFTER_SECONDS)
            message = "database busy: no connection came free in time"
        elif is_busy(exc):
            self.set_status(503)
            self.set_header("Retry-After", RETRY_AFTER_SECONDS)
            message = DATABASE_BUSY
        elif isinstance(exc, DATABASE_DOWN):
            # The database went away under a request: say so and when to retry, rather than a bare 500.
            self.set_status(503)
            self.set_header("Retry-After", RETRY_AFTER_SECONDS)
            message = "database unavailable"
        else:
            # Tornado's own messages (its log_message) quote the raw input and its parser's words: not ours.
            message = OUR_WORDS.get(status_code, self._reason.lower())
        details = exc.details if isinstance(exc, ApiError) else {}
        self.finish(orjson.dumps({"error": message, **details}))

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, ApiError) and value.status_code < 500:
            return  # the access log has it already; a client's mistake is not ours to log twice
        if isinstance(value, DATABASE_DOWN) and not isinstance(value, tornado.web.HTTPError):
            tornado.log.app_log.warning(
                "%s %s: database unavailable or busy: %s", self.request.method, self.request.path, typ.__name__
            )
        else:
            super().log_exception(typ, value, tb)


class DataHandler(JsonHandler):
    """A handler over the table: it answers 503 until the schema is at head."""

    def initialize(self, state: ServiceState, session_factory: SessionFactory):
        super().initialize(state)
        self.session_factory = session_factory

    def prepare(self) -> None:
        super().prepare()
        if not self.state.ready:
            raise ApiError(503, f"not ready: {self.state.phase}", {"Retry-After": RETRY_AFTER_SECONDS})


class RowsHandler(DataHandler):
    async def get(self) -> None:
        limit = self.int_argument("limit", PAGE_LIMIT_DEFAULT, 1, PAGE_LIMIT_MAX)
        after = self.int_argument("after", 0, 0, ID_MAX)
        async with self.session_factory.connection() as connection:
            items = await fetch_page(connection, after, limit)
        self.write_json({"items": items, "next": items[-1]["id"] if items else None})

    async def post(self) -> None:
        name = parse_name(self.request.body)
        async with self.session_factory.connection(writes=True) as connection:
            row = await insert_row(connection, name)
        self.write_json(row, status=201)

    def int_argument(self, name: str, default: int, low: int, high: int) -> int:
        try:
            raw = self.get_query_argument(name, None, strip=False)
        except tornado.web.HTTPError:  # not UTF-8
            raw = ""
        if raw is None:
            return default
        # ASCII digits only: int() would also take "+5", " 5", "5_0" and other scripts' digits.
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 10 and low <= int(raw) <= high):
            raise ApiError(400, f"{name} must be an integer from {low} to {high}")
        return int(raw)


def parse_name(body: bytes) -> str:
    """The name from a POST body, or a 400 saying what is wrong with it."""
    try:
        # orjson rejects invalid UTF-8, lone surrogates and nesting past 1024 levels with a JSONDecodeError.
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, 'body must be JSON: {"name": "..."}') from None
    if not isinstance(data, dict) or set(data) != {"name"}:
        raise ApiError(400, 'body must be a JSON object with exactly one field: {"name": "..."}')
    name = data["name"]
    if not isinstance(name, str):
        raise ApiError(400, "name must be a string")
    if not 1 <= len(name) <= NAME_MAX_LENGTH:
        raise ApiError(400, f"name must be 1 to {NAME_MAX_LENGTH} characters")
    if "\x00" in name:
        raise ApiError(400, "name must not contain NUL")
    return name


class NotFoundHandler(JsonHandler):
    def prepare(self) -> None:
        raise ApiError(404, "not found")
