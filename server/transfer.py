"""Copy the whole database from SQLite to PostgreSQL in one transaction, verified before it commits.

    python -m server.transfer SOURCE_URL TARGET_URL [--replace] [--batch-size N] [--db-wait S]

Only SQLite -> PostgreSQL: the way a service outgrows its embedded default. The source must be at head; the
target is brought to head through the migrator's locked path, as at startup. Every table of the models'
metadata is copied with binary COPY in foreign-key order, sequences restart after the highest id, and row
counts and checksums are compared inside the transaction: a mismatch, an error or a signal rolls it all back.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import gc
import hashlib
import logging
import os
import queue
import re
import signal
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import asyncpg
import orjson
from sqlalchemy import Boolean, DateTime, Integer, String, Table
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from server.db import CONNECT_TIMEOUT
from server.errors import ServiceError as MigrationError
from server.errors import describe
from server.logs import configure_logging
from server.migrations import Migrator
from server.models import Base
from server.settings import Settings, SettingsError, load_settings

log = logging.getLogger("server.transfer")  # not __name__: run with -m, that is "__main__"

EXIT_OK, EXIT_FAILED = 0, 1  # a signal exits 128 + its number: 130 for SIGINT, 143 for SIGTERM
DEFAULT_BATCH_SIZE = 5_000
READ_AHEAD = 8  # chunks the reader thread may hold ready: memory stays flat in the row count
PART_ROWS = 100_000  # rows per COPY before that part is verified (see Transfer._copy_table)
PROGRESS_EVERY = 2.0  # seconds between progress log lines when stderr is not a terminal
UTC = datetime.UTC
PG_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=UTC)  # PostgreSQL's binary timestamps count from here
PG_EPOCH_NAIVE = PG_EPOCH.replace(tzinfo=None)
PG_EPOCH_US_SINCE_1970 = 946_684_800_000_000
MICROSECOND = datetime.timedelta(microseconds=1)
PG_TIMESTAMP = struct.Struct("!q")  # PostgreSQL's binary timestamp: microseconds since PG_EPOCH, big-endian
SEPARATOR = "\x00"  # PostgreSQL text cannot hold NUL, so no value that can be copied contains it
# SQLite concatenates a column a third faster with a literal separator, and SQL text cannot hold NUL: a rare
# character instead, and a chunk where some value holds it is read again joined by NUL.
READ_SEPARATOR = "\x1f"
COPY_SPECIAL = re.compile(r"[\\\x08-\x0d]")  # what COPY's text format escapes: backslash, \b \t \n \v \f \r
COPY_ESCAPES = (
    ("\\", "\\\\"),
    ("\b", "\\b"),
    ("\f", "\\f"),
    ("\n", "\\n"),
    ("\r", "\\r"),
    ("\t", "\\t"),
    ("\v", "\\v"),
)
COPY_NULL = "\\N"
PASSWORD_IN_URL = re.compile(r"(://[^/@\s:]*:)[^@\s]*@")


class TransferError(Exception):
    """A reason to stop, said in one line; nothing has been committed."""


# --- what to copy ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ColumnPlan:
    name: str
    kind: str  # int | bool | text | timestamptz | timestamp
    nullable: bool


@dataclasses.dataclass(frozen=True)
class TablePlan:
    name: str
    columns: tuple[ColumnPlan, ...]  # in the table's order
    key: tuple[int, ...]  # positions of the primary-key columns: the order both sides are read in


def make_plans(tables: Sequence[Table]) -> list[TablePlan]:
    """What each table needs, refusing up front what the copy would get wrong."""
    plans = []
    for table in tables:
        if not table.primary_key.columns:
            raise TransferError(f"table {table.name} has no primary key: it cannot be read in a stable order")
        columns = tuple(ColumnPlan(c.name, _kind(table, c), bool(c.nullable)) for c in table.columns)
        names = [c.name for c in table.columns]
        plans.append(TablePlan(table.name, columns, tuple(names.index(c.name) for c in table.primary_key.columns)))
    return plans


def _kind(table: Table, column) -> str:
    type_ = column.type
    if isinstance(type_, Boolean):
        return "bool"
    if isinstance(type_, Integer):
        return "int"
    if isinstance(type_, String):
        return "text"
    if isinstance(type_, DateTime):
        return "timestamptz" if type_.timezone else "timestamp"
    raise TransferError(f"column {table.name}.{column.name} has type {type_}, which the transfer cannot copy yet")


def quote(name: str) -> str:
    """An identifier as both SQLite and PostgreSQL read it."""
    return '"' + name.replace('"', '""') + '"'


# --- values: SQLite's text -> what binary COPY takes, and the text both sides' checksums cover -------
#
# A table's checksum is SHA-256 over its columns' digests. A column's digest is SHA-256 over its values in
# primary-key order, each written as PostgreSQL's COPY text format writes it (backslash escapes, \N for
# NULL, timestamps as microseconds since 2000-01-01 UTC) and ended by a newline. Column by column, because
# here the text comes from whole columns at C speed (a join, orjson, bytes.replace), where row by row it
# would cost a Python call per row; on the target PostgreSQL writes the rows and they are split into
# columns as they stream in. Both sides hash the same bytes exactly when the data match.

_KIND_WORDS = {
    "int": "an integer",
    "bool": "a boolean (0 or 1)",
    "text": "text",
    "timestamptz": "a timestamp",
    "timestamp": "a timestamp",
}
_PLACEHOLDER = {"int": "0", "bool": "0", "text": "", "timestamptz": "2000-01-01", "timestamp": "2000-01-01"}


def convert(table: str, column: ColumnPlan, raw: list[str], nulls: list[int]) -> list:
    """SQLite's text of a column as Python values (None for NULL): ints, bools, str, or microsecond counts."""
    if nulls:
        raw = list(raw)
        for position in nulls:
            raw[position] = _PLACEHOLDER[column.kind]
    try:
        values = _CONVERT[column.kind](raw)
    except (ValueError, TypeError):
        bad = next(v for v in raw if not _converts(column.kind, v))
        raise TransferError(
            f"source: {table}.{column.name} holds {bad[:60]!r}, which is not {_KIND_WORDS[column.kind]}"
        ) from None
    for position in nulls:
        values[position] = None
    return values


def _to_bool(raw: list[str]) -> list[bool]:
    if not set(raw) <= {"0", "1"}:
        raise ValueError
    return list(map("1".__eq__, raw))


def _to_microseconds(raw: list[str]) -> list[int]:
    # Microseconds since PostgreSQL's epoch: both what the binary COPY sends (PG_TIMESTAMP packs them, where
    # asyncpg's own codec would convert every datetime to UTC) and what the checksum writes.
    try:
        # The common case, naive text as SQLite stores it: UTC, as CURRENT_TIMESTAMP and the handlers mean
        # it. (Text with an offset parses aware, and subtracting it from a naive datetime is a TypeError.)
        parse = datetime.datetime.fromisoformat
        return [(parse(s) - PG_EPOCH_NAIVE) // MICROSECOND for s in raw]
    except (ValueError, TypeError):
        return [(_moment(s) - PG_EPOCH) // MICROSECOND for s in raw]


def _moment(text: str) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_CONVERT = {
    "int": lambda raw: list(map(int, raw)),
    "bool": _to_bool,
    "text": lambda raw: raw,
    "timestamptz": _to_microseconds,
    "timestamp": _to_microseconds,
}


def _converts(kind: str, value: str) -> bool:
    try:
        _CONVERT[kind]([value])
        return True
    except (ValueError, TypeError):
        return False


def canonical_column(kind: str, values: list, has_nulls: bool) -> bytes:
    """A converted column as COPY's text format writes it, one value per line."""
    if kind == "text":
        if has_nulls:
            return "".join(COPY_NULL + "\n" if v is None else _escape(v) + "\n" for v in values).encode()
        joined = SEPARATOR.join(values)
        if COPY_SPECIAL.search(joined):
            joined = _escape(joined)
        return (joined.replace(SEPARATOR, "\n") + "\n").encode()
    # ints, bools and microsecond counts: orjson writes the list at C speed, in the right form but for these
    text = orjson.dumps(values)[1:-1].replace(b",", b"\n") + b"\n"
    if kind == "bool":
        text = text.replace(b"true", b"t").replace(b"false", b"f")
    return text.replace(b"null", COPY_NULL.encode()) if has_nulls else text


def _escape(text: str) -> str:
    for char, escaped in COPY_ESCAPES:
        text = text.replace(char, escaped)
    return text


class ColumnDigests:
    """One SHA-256 per column; the table's checksum is the SHA-256 of their digests."""

    def __init__(self, columns: int):
        self.columns = [hashlib.sha256() for _ in range(columns)]
        self.rows = 0
        self._partial = b""  # a row cut in two between the pieces of a COPY stream

    def add_columns(self, columns: list[bytes], rows: int) -> None:
        for digest, text in zip(self.columns, columns, strict=True):
            digest.update(text)
        self.rows += rows

    def add_copy_text(self, data: bytes) -> None:
        """A piece of a COPY ... TO STDOUT stream (text format): split into columns at C speed."""
        data = self._partial + data
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        if not end:
            return
        # Inside a value tab and newline are escaped, so the raw ones are the only separators.
        fields = data[:end].replace(b"\n", b"\t").split(b"\t")[:-1]
        width = len(self.columns)
        self.add_columns([b"\n".join(fields[i::width]) + b"\n" for i in range(width)], len(fields) // width)

    def hexdigest(self) -> str:
        if self._partial:
            raise TransferError("target: the COPY stream ended in the middle of a row")
        return hashlib.sha256(b"".join(d.digest() for d in self.columns)).hexdigest()


# --- signals -------------------------------------------------------------------------------------------


class Interrupt:
    """SIGINT and SIGTERM: stop the transfer and roll it back, unless it is already committing.

    Plain signal handlers, not the event loop's: while asyncpg feeds the COPY from a plain generator the
    loop may not run for a while, but the reader's waits look at `requested` and stop there. The loop's
    turn comes at the next await: then the task is cancelled, unless a wait has stopped it already.
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


# --- the source: SQLite, read and prepared on a thread of its own ----------------------------------


@dataclasses.dataclass
class Chunk:
    """Consecutive rows of a table, ready for both sides of the copy."""

    rows: int
    records: list[tuple]  # as binary COPY takes them
    last_key: tuple  # the primary key of the last row, as a query parameter


@dataclasses.dataclass
class TableRead:
    """The end of a table: what the source held."""

    rows: int
    checksum: str


class SourceReader:
    """Reads every table in one read transaction (one consistent snapshot) and prepares its rows.

    Each chunk is one query that returns each column as a single string (group_concat): SQLite builds it
    without holding the GIL, one split gives the column back, and the conversions then work on whole
    columns. Row by row, the sqlite3 module spends most of its time making tuples. Preparing here, ahead,
    lets the event loop's thread only feed PostgreSQL, and keeps work ready while PostgreSQL verifies.
    """

    def __init__(self, path: str, plans: list[TablePlan], batch_size: int, interrupt: Interrupt):
        self.path, self.plans, self.batch_size, self.interrupt = path, plans, batch_size, interrupt
        self._queue: queue.Queue = queue.Queue(READ_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:  # unblock a put() so the thread sees the stop
                self._queue.get_nowait()
        self._thread.join(10)

    def next(self):
        """The next message: ("versions", tuple), ("table", name, rows), then Chunks and a TableRead."""
        while True:
            self.interrupt.stop_here()
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive():  # a bug there must not leave this waiting forever
                    raise TransferError("source: the reader thread stopped without a word") from None
        if isinstance(item, BaseException):
            raise item
        return item

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _run(self) -> None:
        try:
            uri = Path(self.path).as_uri() + "?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)) as db:
                db.execute("BEGIN")  # one snapshot for every table, and for the revision check
                self._put(("versions", tuple(v for (v,) in db.execute("SELECT version_num FROM alembic_version"))))
                for plan in self.plans:
                    rows = db.execute(f"SELECT count(*) FROM {quote(plan.name)}").fetchone()[0]
                    self._put(("table", plan.name, rows))
                    digests = ColumnDigests(len(plan.columns))  # hashed here: it lets go of the GIL meanwhile
                    for chunk, canonical in self._chunks(db, plan):
                        digests.add_columns(canonical, chunk.rows)
                        self._put(chunk)
                    self._put(TableRead(digests.rows, digests.hexdigest()))
        except _Stopped:
            pass
        except sqlite3.Error as exc:
            self._put_error(TransferError(f"source: {type(exc).__name__}: {exc}"))
        except BaseException as exc:  # handed to the consumer, which reports it
            self._put_error(exc)

    def _put_error(self, exc: BaseException) -> None:
        with contextlib.suppress(_Stopped):
            self._put(exc)

    def _chunks(self, db: sqlite3.Connection, plan: TablePlan) -> Iterator[tuple[Chunk, list[bytes]]]:
        fast, safe = _chunk_queries(plan, f"'{READ_SEPARATOR}'"), _chunk_queries(plan, "char(0)")
        after: list = []
        while not self._stop.is_set():
            read = self._read(db, fast, READ_SEPARATOR, after, plan)
            if read is None:  # a value holds the separator: read this chunk again, joined by NUL
                read = self._read(db, safe, SEPARATOR, after, plan)
            if read is None:
                raise _nul_error(db, plan)
            count, columns, nulls, separator = read
            if not count:
                return
            if separator != SEPARATOR and any(SEPARATOR in joined for joined in columns):
                raise _nul_error(db, plan)
            yield prepare(plan, count, [joined.split(separator) for joined in columns], nulls)
            after = [columns[i].rpartition(separator)[2] for i in plan.key]

    def _read(self, db: sqlite3.Connection, queries: tuple[str, str], separator: str, after: list, plan: TablePlan):
        """The rows after key `after`, each column joined by `separator`; None if a value holds it."""
        first, following = queries
        cursor = db.execute(following, (*after, self.batch_size)) if after else db.execute(first, (self.batch_size,))
        count, *columns = cursor.fetchone()
        width = len(plan.columns)
        if count and any(joined.count(separator) != count - 1 for joined in columns[:width]):
            return None
        nulls = [[] for _ in range(width)]
        masks = iter(columns[width:])
        for i, column in enumerate(plan.columns):
            if count and column.nullable:
                nulls[i] = [position for position, flag in enumerate(next(masks)) if flag == "1"]
        return count, columns[:width], nulls, separator


def _nul_error(db: sqlite3.Connection, plan: TablePlan) -> TransferError:
    keys = ", ".join(quote(plan.columns[i].name) for i in plan.key)
    for column in plan.columns:
        found = db.execute(
            f"SELECT {keys} FROM {quote(plan.name)} WHERE instr({quote(column.name)}, char(0)) > 0"
        ).fetchone()
        if found:
            key = found[0] if len(found) == 1 else found
            return TransferError(
                f"source: {plan.name}.{column.name} of the row with key {key!r} holds a NUL character, "
                "which PostgreSQL cannot store"
            )
    return TransferError(f"source: a value in table {plan.name} holds a NUL character, which PostgreSQL cannot store")


class _Stopped(Exception):
    """The consumer closed the reader: stop quietly."""


def _chunk_queries(plan: TablePlan, separator: str) -> tuple[str, str]:
    """The SQL for a table's first chunk and for the chunk after a key: each column as one string."""
    names = [quote(c.name) for c in plan.columns]
    keys = [names[i] for i in plan.key]
    # group_concat skips NULLs, so nullable columns read '' and a mask of which ones were NULL.
    values = [f"ifnull({n}, '')" if c.nullable else n for n, c in zip(names, plan.columns, strict=True)]
    aggregates = [f"group_concat({v}, {separator})" for v in values]
    aggregates += [f"group_concat({n} IS NULL, '')" for n, c in zip(names, plan.columns, strict=True) if c.nullable]
    inner = f"SELECT {', '.join(names)} FROM {quote(plan.name)} {{where}} ORDER BY {', '.join(keys)} LIMIT ?"
    # Every aggregate reads the same ordered rows in one pass, so the columns stay aligned.
    outer = f"SELECT count(*), {', '.join(aggregates)} FROM ({inner})"
    where = f"WHERE ({', '.join(keys)}) > ({', '.join('?' * len(keys))})"
    return outer.format(where=""), outer.format(where=where)


def prepare(plan: TablePlan, rows: int, raw: list[list[str]], nulls: list[list[int]]) -> tuple[Chunk, list[bytes]]:
    """Rows as binary COPY takes them, and per column the text the source's checksum covers."""
    values = [convert(plan.name, c, r, n) for c, r, n in zip(plan.columns, raw, nulls, strict=True)]
    canonical = [canonical_column(c.kind, v, bool(n)) for c, v, n in zip(plan.columns, values, nulls, strict=True)]
    return Chunk(rows, list(zip(*values, strict=True)), tuple(values[i][-1] for i in plan.key)), canonical


# --- the target's side of the checksum -----------------------------------------------------------------


def target_rows_query(plan: TablePlan, lower: bool, upper: bool) -> str:
    """The rows whose COPY text the target's checksum covers: those after key $1 (lower) up to key $2 or $1
    (upper), in the order the source was read."""
    expressions = []
    for column in plan.columns:
        name = quote(column.name)
        if column.kind.startswith("timestamp"):
            name = f"(extract(epoch FROM {name}) * 1000000)::bigint - {PG_EPOCH_US_SINCE_1970}"
        expressions.append(name)
    # COLLATE "C" orders text by code point, as SQLite's default BINARY collation does.
    keys = [quote(plan.columns[i].name) + (' COLLATE "C"' if plan.columns[i].kind == "text" else "") for i in plan.key]
    width = len(keys)
    bounds, number = [], 1
    if lower:
        bounds.append(f"({', '.join(keys)}) > ({', '.join(f'${number + i}' for i in range(width))})")
        number += width
    if upper:
        bounds.append(f"({', '.join(keys)}) <= ({', '.join(f'${number + i}' for i in range(width))})")
    where = f" WHERE {' AND '.join(bounds)}" if bounds else ""
    return f"SELECT {', '.join(expressions)} FROM {quote(plan.name)}{where} ORDER BY {', '.join(keys)}"


# --- progress ----------------------------------------------------------------------------------------


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


# --- the transfer ------------------------------------------------------------------------------------


@dataclasses.dataclass
class TableFigures:
    name: str
    source_rows: int = 0
    target_rows: int = 0
    source_checksum: str = ""
    target_checksum: str = ""

    @property
    def match(self) -> bool:
        return self.source_rows == self.target_rows and self.source_checksum == self.target_checksum


class Transfer:
    def __init__(
        self, source: Settings, target: Settings, replace: bool, batch_size: int, bar: bool, interrupt: Interrupt
    ):
        self.source, self.target = source, target
        self.replace, self.batch_size, self.bar = replace, batch_size, bar
        self.interrupt = interrupt
        self.plans = make_plans(Base.metadata.sorted_tables)
        self.figures: list[TableFigures] = []
        self.copying = False  # the target's transaction has begun

    async def run(self) -> None:
        check_urls(self.source.database_url, self.target.database_url)
        heads = await self._source_at_head()
        await self._target_to_head()
        reader = SourceReader(self.source.database_url.database, self.plans, self.batch_size, self.interrupt)
        connection = await self._connect()
        try:
            reader.start()
            versions = reader.next()[1]
            if set(versions) != set(heads):  # migrated between the status check and the snapshot
                raise TransferError(f"source moved to {', '.join(versions)} during the check: run the transfer again")
            await self._copy_all(connection, reader)
            await connection.close(timeout=5)
        except asyncio.CancelledError:
            await self._end_backend(connection)
            raise
        finally:
            reader.close()
            if not connection.is_closed():
                connection.terminate()  # whatever is not committed dies with the connection

    async def _end_backend(self, connection: asyncpg.Connection) -> None:
        """On a signal, end our server process from a second connection: the rollback happens now, even
        if it is busy (a long read, a slow trigger) and would notice the dropped connection only later."""
        with contextlib.suppress(Exception):
            other = await asyncpg.connect(self._dsn(), timeout=3)
            try:
                await asyncio.wait_for(other.execute(f"SELECT pg_terminate_backend({connection.get_server_pid()})"), 3)
            finally:
                other.terminate()

    def _dsn(self) -> str:
        return self.target.database_url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def _source_at_head(self) -> tuple[str, ...]:
        path = Path(self.source.database_url.database)
        if not path.is_file():
            raise TransferError(f"source unreachable: SQLite file {path} does not exist")
        status = await self._in_thread("source", Migrator(self.source).status, True)
        if not status.at_head:
            raise TransferError(
                f"source is at {', '.join(status.current) or 'base (empty)'}, not at head "
                f"({', '.join(status.heads)}): upgrade it first, e.g. "
                f"python run.py --migrate=only --database-url=sqlite:///{path}"
            )
        return status.heads

    async def _target_to_head(self) -> None:
        result = await self._in_thread("target", Migrator(self.target).upgrade, self.interrupt.requested)
        if result.applied:
            log.info("target upgraded to %s", ", ".join(result.status.current))

    async def _in_thread(self, side: str, work, *args):
        # The migrator runs its own event loop, so it gets a thread, as in the server. On a signal the
        # upgrade stops between revisions, and this waits for it rather than leaving it half done.
        future = asyncio.get_running_loop().run_in_executor(None, work, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # interrupt.requested is set: it stops between revisions
                await future
            raise
        except MigrationError as exc:
            self.interrupt.stop_here()  # the upgrade stopped between revisions for a signal
            raise TransferError(f"{side}: {exc}") from None
        except (DBAPIError, sqlite3.Error, OSError) as exc:
            raise TransferError(f"{side}: {describe(exc, getattr(self, side).database_url)}") from None

    async def _connect(self) -> asyncpg.Connection:
        try:
            connection = await asyncpg.connect(
                self._dsn(),
                timeout=CONNECT_TIMEOUT,
                server_settings={"application_name": f"server.transfer pid {os.getpid()}"},
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise TransferError(f"target unreachable: {describe(exc, self.target.database_url)}") from None
        # Timestamps travel as microsecond counts: see _to_microseconds.
        for type_name in ("timestamptz", "timestamp"):
            await connection.set_type_codec(
                type_name, schema="pg_catalog", encoder=PG_TIMESTAMP.pack, decoder=PG_TIMESTAMP.unpack, format="binary"
            )
        return connection

    async def _copy_all(self, connection: asyncpg.Connection, reader: SourceReader) -> None:
        started = time.monotonic()
        transaction = connection.transaction()
        self.copying = True
        await transaction.start()
        try:
            await self._claim_tables(connection)
            for plan in self.plans:
                self.figures.append(await self._copy_table(connection, reader, plan))
            print_figures(self.figures)
            if not all(f.match for f in self.figures):
                bad = ", ".join(f.name for f in self.figures if not f.match)
                raise TransferError(f"verification failed for {bad}: rolled back, the target is as it was")
            await self._restart_sequences(connection)
            self.interrupt.committing = True
            await transaction.commit()
        except asyncio.CancelledError:
            raise  # a signal: the connection is dropped, which rolls back at once (see run)
        except BaseException as exc:
            with contextlib.suppress(Exception):  # a COPY cut short may leave nothing to roll back on
                await asyncio.wait_for(transaction.rollback(), 5)
            if isinstance(exc, (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
                raise TransferError(
                    f"target: {describe(exc, self.target.database_url)}; rolled back, the target is as it was"
                ) from None
            raise
        rows = sum(f.source_rows for f in self.figures)
        seconds = time.monotonic() - started
        log.info(
            "committed: %d table(s), %s rows in %.2f s (%s rows/s, verification included)",
            len(self.figures),
            f"{rows:,}",
            seconds,
            f"{rows / seconds:,.0f}",
        )

    async def _claim_tables(self, connection: asyncpg.Connection) -> None:
        """Take the tables until commit (readers wait, and then see every row at once), check that they are
        empty unless --replace, and truncate them."""
        names = ", ".join(quote(p.name) for p in self.plans)
        await connection.execute(f"SET LOCAL lock_timeout = {int(self.target.ddl_lock_timeout * 1000)}")
        await connection.execute(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
        if not self.replace:
            exists = "SELECT EXISTS (SELECT 1 FROM {})"
            full = [p.name for p in self.plans if await connection.fetchval(exists.format(quote(p.name)))]
            if full:
                raise TransferError(
                    f"target table {', '.join(full)} already holds rows; nothing was written "
                    "(--replace empties the target's tables in the same transaction)"
                )
        # Even when empty: a fresh file and index, where deleted rows not yet vacuumed would make every
        # insert check its key against them (four times slower). Like all of this, undone by a rollback.
        await connection.execute(f"TRUNCATE {names}")

    async def _copy_table(self, connection: asyncpg.Connection, reader: SourceReader, plan: TablePlan) -> TableFigures:
        """COPY a table in parts of PART_ROWS, each read back right after it is written.

        While PostgreSQL reads a part back, the reader thread goes on preparing the next one, so its work
        hides behind the verification instead of following it, and a mismatch shows early.
        """
        _, _, total = reader.next()
        target = ColumnDigests(len(plan.columns))
        progress = Progress(plan.name, total, self.bar)
        columns = [c.name for c in plan.columns]
        lower: tuple | None = None  # the last key of the part before
        item = reader.next()
        try:
            while isinstance(item, Chunk):
                part = Part(item, reader, progress)
                await connection.copy_records_to_table(plan.name, records=part.records(), columns=columns)
                # The last part's range is left open, so the check would see any row beyond it.
                upper = part.last_key if isinstance(part.following, Chunk) else None
                await self._read_back(connection, plan, target, lower, upper)
                lower, item = part.last_key, part.following
            if lower is None:  # no rows: still look, the table must be empty
                await self._read_back(connection, plan, target, None, None)
        finally:
            seconds = progress.close()
        rate = f"{item.rows / seconds:,.0f}" if seconds else "-"
        log.info("%s: copied and read back %s rows in %.2f s (%s rows/s)", plan.name, f"{item.rows:,}", seconds, rate)
        return TableFigures(plan.name, item.rows, target.rows, item.checksum, target.hexdigest())

    async def _read_back(self, connection, plan: TablePlan, digests: ColumnDigests, lower, upper) -> None:
        async def take(data: bytes) -> None:
            digests.add_copy_text(data)

        query = target_rows_query(plan, lower is not None, upper is not None)
        arguments = (*(lower or ()), *(upper or ()))
        await connection.copy_from_query(query, *arguments, output=take)

    async def _restart_sequences(self, connection: asyncpg.Connection) -> None:
        """The next insert gets max(id) + 1. ALTER SEQUENCE rather than setval(): it rolls back with the rest."""
        for plan in self.plans:
            for column in (plan.columns[i] for i in plan.key if plan.columns[i].kind == "int"):
                sequence = await connection.fetchval(
                    "SELECT pg_get_serial_sequence($1, $2)", quote(plan.name), column.name
                )
                if sequence is None:
                    continue
                highest = await connection.fetchval(f"SELECT max({quote(column.name)}) FROM {quote(plan.name)}")
                await connection.execute(
                    f"ALTER SEQUENCE {sequence} RESTART" + ("" if highest is None else f" WITH {highest + 1}")
                )
                log.info(
                    "%s: the next %s will be %s",
                    plan.name,
                    column.name,
                    "the first" if highest is None else highest + 1,
                )


class Part:
    """The chunks of one COPY: from `first` until PART_ROWS rows or the table's end."""

    def __init__(self, first: Chunk, reader: SourceReader, progress: Progress):
        self.first, self.reader, self.progress = first, reader, progress
        self.last_key: tuple = first.last_key
        self.following: Chunk | TableRead | None = None  # what starts the next part, or ends the table

    def records(self) -> Iterator[tuple]:
        # A plain generator: asyncpg encodes from it in C and awaits only when its buffer is full.
        chunk, rows = self.first, 0
        while True:
            self.progress.update(chunk.rows)
            self.last_key = chunk.last_key
            rows += chunk.rows
            yield from chunk.records
            following = self.reader.next()
            if not isinstance(following, Chunk) or rows >= PART_ROWS:
                self.following = following
                return
            chunk = following


def check_urls(source: URL, target: URL) -> None:
    """Refuse the same database twice, and the directions this tool does not support."""
    if source.get_backend_name() == target.get_backend_name() and _identity(source) == _identity(target):
        raise TransferError(f"source and target are the same database ({source}): nothing to do")
    if source.get_backend_name() != "sqlite" or target.get_backend_name() != "postgresql":
        raise TransferError(
            f"only SQLite -> PostgreSQL is supported, not {source.get_backend_name()} -> {target.get_backend_name()}"
        )


def _identity(url: URL) -> tuple:
    if url.get_backend_name() == "sqlite":
        return (os.path.realpath(url.database),)
    return (url.host or "localhost", url.port or 5432, url.database, url.query.get("host"))


def print_figures(figures: list[TableFigures]) -> None:
    print(
        f"{'table':<20} {'source rows':>12} {'target rows':>12}  {'source sha256':<16}  {'target sha256':<16}  verdict"
    )
    for f in figures:
        print(
            f"{f.name:<20} {f.source_rows:>12,} {f.target_rows:>12,}  {f.source_checksum[:16]:<16}  "
            f"{f.target_checksum[:16]:<16}  {'match' if f.match else 'MISMATCH'}",
            flush=True,
        )


# --- the command line --------------------------------------------------------------------------------


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise TransferError(f"bad arguments: {mask_passwords(message)} (see --help)")


def mask_passwords(text: str) -> str:
    """argparse and the settings echo what they were given: URLs in it lose their passwords."""
    return PASSWORD_IN_URL.sub(r"\1***@", text)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = _ArgumentParser(prog="python -m server.transfer", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", metavar="SOURCE_URL", help="sqlite:///path/to/app.db (at head)")
    parser.add_argument("target", metavar="TARGET_URL", help="postgresql://user@host/db (upgraded to head)")
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
    # What the imports made (SQLAlchemy, Alembic: a few hundred thousand objects) lives until exit. Frozen,
    # the garbage collector stops walking it on every full collection the copy's row tuples set off, and
    # again at exit: together about a tenth of a second per run.
    gc.freeze()
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
    except TransferError as exc:
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
    except TransferError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except Exception as exc:  # a bug: still one line (the traceback at debug level), still nothing committed
        log.debug("transfer failed", exc_info=True)
        log.error("transfer failed: %s", describe(exc, transfer.target.database_url))
        return EXIT_FAILED
    if interrupt.signum is not None:
        log.warning("%s came while committing: the transfer finished first", interrupt.name)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
