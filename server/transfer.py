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
import hashlib
import logging
import os
import queue
import re
import signal
import sqlite3
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
from server.main import configure_logging
from server.migrator import MigrationError, Migrator, describe
from server.models import Base
from server.settings import Settings, SettingsError, load_settings

log = logging.getLogger("server.transfer")  # not __name__: run with -m, that is "__main__"

EXIT_OK, EXIT_FAILED = 0, 1  # a signal exits 128 + its number: 130 for SIGINT, 143 for SIGTERM
DEFAULT_BATCH_SIZE = 10_000
READ_AHEAD = 4  # chunks the reader thread may hold ready: memory stays flat in the row count
PROGRESS_EVERY = 2.0  # seconds between progress log lines when stderr is not a terminal
UTC = datetime.timezone.utc
PG_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=UTC)  # PostgreSQL's binary timestamps count from here
MICROSECOND = datetime.timedelta(microseconds=1)
PG_EPOCH_US_SINCE_1970 = 946_684_800_000_000
SEPARATOR = "\x00"  # joins a chunk's values: PostgreSQL text cannot hold NUL, so no value can contain it
COPY_SPECIAL = re.compile(r"[\\\x08-\x0d]")  # what COPY's text format escapes: backslash, \b \t \n \v \f \r
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


# --- the source: SQLite, read column-wise in a thread ----------------------------------------------


@dataclasses.dataclass
class Chunk:
    rows: int
    values: list[list[str]]  # per column, SQLite's text of each value ('' for NULL)
    nulls: list[list[int]]  # per column, the positions that are NULL


class SourceReader:
    """Reads every table in one read transaction (one consistent snapshot) on a thread of its own.

    Each chunk is one query that returns each column as a single string (group_concat): SQLite builds it
    without holding the GIL, and one split gives the column back. Row by row, the sqlite3 module spends
    most of its time making tuples, which would compete with the COPY for this process's one busy core.
    """

    _DONE = object()

    def __init__(self, path: str, plans: list[TablePlan], batch_size: int):
        self.path, self.plans, self.batch_size = path, plans, batch_size
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
        """The next message: ("versions", tuple), ("table", name, rows), a Chunk, or None at a table's end."""
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return None if item is self._DONE else item

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
                    self._put(("table", plan.name, db.execute(f"SELECT count(*) FROM {quote(plan.name)}").fetchone()[0]))
                    for chunk in self._chunks(db, plan):
                        self._put(chunk)
                    self._put(self._DONE)
        except _Stopped:
            pass
        except sqlite3.Error as exc:
            self._put_error(TransferError(f"source: {type(exc).__name__}: {exc}"))
        except BaseException as exc:  # handed to the consumer, which reports it
            self._put_error(exc)

    def _put_error(self, exc: BaseException) -> None:
        with contextlib.suppress(_Stopped):
            self._put(exc)

    def _chunks(self, db: sqlite3.Connection, plan: TablePlan) -> Iterator[Chunk]:
        names = [quote(c.name) for c in plan.columns]
        keys = [names[i] for i in plan.key]
        aggregates = [f"group_concat(ifnull({n}, ''), char(0))" for n in names]
        aggregates += [f"group_concat({n} IS NULL, '')" for n, c in zip(names, plan.columns, strict=True) if c.nullable]
        inner = f"SELECT {', '.join(names)} FROM {quote(plan.name)} {{where}} ORDER BY {', '.join(keys)} LIMIT ?"
        # Every aggregate reads the same ordered rows in one pass, so the columns stay aligned.
        outer = f"SELECT count(*), {', '.join(aggregates)} FROM ({inner})"
        first = outer.format(where="")
        after = outer.format(where=f"WHERE ({', '.join(keys)}) > ({', '.join('?' * len(keys))})")
        nullable = [i for i, c in enumerate(plan.columns) if c.nullable]
        row = db.execute(first, (self.batch_size,)).fetchone()
        while row[0] and not self._stop.is_set():
            count = row[0]
            values = [joined.split(SEPARATOR) for joined in row[1 : 1 + len(names)]]
            if any(len(v) != count for v in values):
                name = next(c.name for c, v in zip(plan.columns, values, strict=True) if len(v) != count)
                raise TransferError(f"source: a value in {plan.name}.{name} contains NUL, which PostgreSQL cannot store")
            nulls = [[] for _ in names]
            for i, mask in zip(nullable, row[1 + len(names) :], strict=True):
                nulls[i] = [position for position, flag in enumerate(mask) if flag == "1"]
            yield Chunk(count, values, nulls)
            last = [values[i][-1] for i in plan.key]
            row = db.execute(after, (*last, self.batch_size)).fetchone()


class _Stopped(Exception):
    pass


# --- values: SQLite's text -> what binary COPY takes, and the canonical text both sides hash --------
#
# A table's checksum is SHA-256 over its columns' digests. A column's digest is SHA-256 over its values in
# primary-key order, each written as PostgreSQL's COPY text format writes it (backslash escapes, \N for
# NULL, timestamps as microseconds since 2000-01-01 UTC) and ended by a newline. Column by column, because
# here the text comes from whole columns at C speed (a join, orjson, bytes.replace), where row by row it
# would cost a Python call per row; on the target PostgreSQL writes the rows and they are split into
# columns as they stream in. Both sides hash the same bytes exactly when the data match.

_PLACEHOLDER = {"int": "0", "bool": "0", "text": "", "timestamptz": "2000-01-01", "timestamp": "2000-01-01"}


def convert(plan: TablePlan, column: int, chunk: Chunk) -> list:
    """One column of a chunk as Python values (None for NULL): ints, bools, str, or microsecond counts."""
    spec = plan.columns[column]
    raw, nulls = chunk.values[column], chunk.nulls[column]
    if nulls:
        raw = list(raw)
        for position in nulls:
            raw[position] = _PLACEHOLDER[spec.kind]
    try:
        values = _CONVERT[spec.kind](raw)
    except ValueError:
        bad = next(v for v in raw if not _converts(spec.kind, v))
        raise TransferError(f"source: {plan.name}.{spec.name} holds {bad[:60]!r}, which is not a {spec.kind}") from None
    for position in nulls:
        values[position] = None
    return values


def _to_bool(raw: list[str]) -> list[bool]:
    if not set(raw) <= {"0", "1"}:
        raise ValueError
    return list(map("1".__eq__, raw))


def _to_microseconds(raw: list[str]) -> list[int]:
    # Microseconds since PostgreSQL's epoch: both what the binary COPY sends (through a "tuple" codec,
    # which skips asyncpg's per-value timezone conversion) and what the checksum writes.
    try:
        # The common case, naive text as SQLite stores it: UTC, as CURRENT_TIMESTAMP and the handlers mean it.
        moments = [datetime.datetime.fromisoformat(s + "+00:00") for s in raw]
    except ValueError:
        moments = [_moment(s) for s in raw]
    return [(m - PG_EPOCH) // MICROSECOND for m in moments]


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
    except ValueError:
        return False


def copy_column(kind: str, values: list) -> list:
    """A converted column as asyncpg's binary COPY takes it."""
    if kind.startswith("timestamp"):
        return [None if v is None else (v,) for v in values]  # the "tuple" codec's (microseconds,)
    return values


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
    for char, escaped in (("\\", "\\\\"), ("\b", "\\b"), ("\f", "\\f"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\v", "\\v")):
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
        rows = len(fields) // width
        self.add_columns([b"\n".join(fields[i::width]) + b"\n" for i in range(width)], rows)

    def hexdigest(self) -> str:
        if self._partial:
            raise TransferError("target: the COPY stream ended in the middle of a row")
        return hashlib.sha256(b"".join(d.digest() for d in self.columns)).hexdigest()


def target_checksum_query(plan: TablePlan) -> str:
    """The SELECT whose COPY text the target's checksum is taken over."""
    expressions = []
    for column in plan.columns:
        name = quote(column.name)
        if column.kind.startswith("timestamp"):
            name = f"(extract(epoch FROM {name}) * 1000000)::bigint - {PG_EPOCH_US_SINCE_1970}"
        expressions.append(name)
    # COLLATE "C" orders text keys by code point, as SQLite's default BINARY collation does.
    order = [quote(plan.columns[i].name) + (' COLLATE "C"' if plan.columns[i].kind == "text" else "") for i in plan.key]
    return f"SELECT {', '.join(expressions)} FROM {quote(plan.name)} ORDER BY {', '.join(order)}"


# --- progress ----------------------------------------------------------------------------------------


class Progress:
    """A bar per table on a terminal; otherwise a log line every few seconds. Both show rows/s."""

    def __init__(self, table: str, total: int, bar: bool):
        self.table, self.total, self.done = table, total, 0
        self.started = self.reported = time.monotonic()
        self.bar = None
        if bar:
            from tqdm import tqdm  # only on a terminal: the import is not free

            self.bar = tqdm(total=total, desc=table, unit=" rows", unit_scale=True, file=sys.stderr, leave=True)
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
            log.info("%s: %s of %s rows%s, %s rows/s", self.table, f"{self.done:,}", f"{self.total:,}", share,
                     f"{self.done / (now - self.started):,.0f}")

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
    copy_seconds: float = 0.0
    verify_seconds: float = 0.0

    @property
    def match(self) -> bool:
        return self.source_rows == self.target_rows and self.source_checksum == self.target_checksum


class Transfer:
    def __init__(self, source: Settings, target: Settings, replace: bool, batch_size: int, bar: bool):
        self.source, self.target = source, target
        self.replace, self.batch_size, self.bar = replace, batch_size, bar
        self.plans = make_plans(Base.metadata.sorted_tables)
        self.stop_migrating = threading.Event()
        self.committing = False  # past this point a signal no longer cancels: the commit finishes
        self.figures: list[TableFigures] = []

    async def run(self) -> None:
        check_urls(self.source.database_url, self.target.database_url)
        heads = await self._source_at_head()
        await self._target_to_head()
        reader = SourceReader(self.source.database_url.database, self.plans, self.batch_size)
        connection = await self._connect()
        try:
            reader.start()
            versions = reader.next()[1]
            if set(versions) != set(heads):  # migrated between the status check and the snapshot
                raise TransferError(f"source moved to {', '.join(versions)} during the check: run the transfer again")
            await self._copy_all(connection, reader)
        finally:
            reader.close()
            if not connection.is_closed():
                connection.terminate()  # anything not committed dies with the connection

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
        migrator = Migrator(self.target)
        result = await self._in_thread("target", migrator.upgrade, self.stop_migrating)
        if result.applied:
            log.info("target upgraded to %s", ", ".join(result.status.current))

    async def _in_thread(self, side: str, work, *args):
        # The migrator runs its own event loop, so it gets a thread, as in the server. On a signal the
        # upgrade stops between revisions, and this waits for it rather than leaving it half done.
        future = asyncio.get_running_loop().run_in_executor(None, work, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            self.stop_migrating.set()
            with contextlib.suppress(Exception):
                await future
            raise
        except MigrationError as exc:
            raise TransferError(f"{side}: {exc}") from None
        except (DBAPIError, sqlite3.Error, OSError) as exc:
            raise TransferError(f"{side}: {describe(exc, getattr(self, side))}") from None

    async def _connect(self) -> asyncpg.Connection:
        url = self.target.database_url
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            connection = await asyncpg.connect(
                dsn,
                timeout=CONNECT_TIMEOUT,
                server_settings={"application_name": f"server.transfer pid {os.getpid()}"},
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise TransferError(f"target unreachable: {describe(exc, self.target)}") from None
        # Timestamps travel as microsecond counts: see _to_microseconds.
        for type_name in ("timestamptz", "timestamp"):
            await connection.set_type_codec(type_name, schema="pg_catalog", encoder=tuple, decoder=tuple, format="tuple")
        return connection

    async def _copy_all(self, connection: asyncpg.Connection, reader: SourceReader) -> None:
        started = time.monotonic()
        transaction = connection.transaction()
        await transaction.start()
        try:
            await self._claim_tables(connection)
            for plan in self.plans:
                figures = await self._copy_table(connection, reader, plan)
                await self._verify_table(connection, plan, figures)
                self.figures.append(figures)
            print_figures(self.figures)
            if not all(f.match for f in self.figures):
                bad = ", ".join(f.name for f in self.figures if not f.match)
                raise TransferError(f"verification failed for {bad}: rolled back, the target is as it was")
            await self._restart_sequences(connection)
            self.committing = True
            await transaction.commit()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise TransferError(f"target: {describe(exc, self.target)}; rolled back, the target is as it was") from None
        rows = sum(f.source_rows for f in self.figures)
        seconds = time.monotonic() - started
        log.info(
            "committed: %d tables, %s rows in %.2f s (%s rows/s, verification included)",
            len(self.figures), f"{rows:,}", seconds, f"{rows / seconds:,.0f}" if seconds else "-",
        )

    async def _claim_tables(self, connection: asyncpg.Connection) -> None:
        """Keep writers out until commit, and make sure the tables start empty."""
        names = ", ".join(quote(p.name) for p in self.plans)
        await connection.execute(f"SET LOCAL lock_timeout = {int(self.target.ddl_lock_timeout * 1000)}")
        if self.replace:
            await connection.execute(f"TRUNCATE {names}")  # transactional: undone by a rollback
            return
        # Readers may go on (they see the old, empty tables); writers wait for the commit.
        await connection.execute(f"LOCK TABLE {names} IN EXCLUSIVE MODE")
        full = [p.name for p in self.plans if await connection.fetchval(f"SELECT EXISTS (SELECT 1 FROM {quote(p.name)})")]
        if full:
            raise TransferError(
                f"target table {', '.join(full)} already holds rows; nothing was written "
                "(--replace empties the target's tables in the same transaction)"
            )

    async def _copy_table(self, connection: asyncpg.Connection, reader: SourceReader, plan: TablePlan) -> TableFigures:
        _, _, total = reader.next()
        figures = TableFigures(plan.name)
        digests = ColumnDigests(len(plan.columns))
        progress = Progress(plan.name, total, self.bar)

        def records() -> Iterator[tuple]:
            # A plain generator: asyncpg encodes from it in C and awaits only when its buffer is full.
            while (chunk := reader.next()) is not None:
                values = [convert(plan, i, chunk) for i in range(len(plan.columns))]
                digests.add_columns(
                    [canonical_column(c.kind, v, bool(n)) for c, v, n in zip(plan.columns, values, chunk.nulls, strict=True)],
                    chunk.rows,
                )
                progress.update(chunk.rows)
                yield from zip(*(copy_column(c.kind, v) for c, v in zip(plan.columns, values, strict=True)))

        try:
            await connection.copy_records_to_table(plan.name, records=records(), columns=[c.name for c in plan.columns])
        finally:
            figures.copy_seconds = progress.close()
        figures.source_rows, figures.source_checksum = digests.rows, digests.hexdigest()
        rate = figures.source_rows / figures.copy_seconds if figures.copy_seconds else 0
        log.info("%s: copied %s rows in %.2f s (%s rows/s)", plan.name, f"{figures.source_rows:,}",
                 figures.copy_seconds, f"{rate:,.0f}")
        return figures

    async def _verify_table(self, connection: asyncpg.Connection, plan: TablePlan, figures: TableFigures) -> None:
        started = time.monotonic()
        digests = ColumnDigests(len(plan.columns))

        async def take(data: bytes) -> None:
            digests.add_copy_text(data)

        await connection.copy_from_query(target_checksum_query(plan), output=take)
        figures.target_rows, figures.target_checksum = digests.rows, digests.hexdigest()
        figures.verify_seconds = time.monotonic() - started

    async def _restart_sequences(self, connection: asyncpg.Connection) -> None:
        """The next insert gets max(id) + 1. ALTER SEQUENCE rather than setval(): it rolls back with the rest."""
        for plan in self.plans:
            for i in plan.key:
                column = plan.columns[i]
                if column.kind != "int":
                    continue
                sequence = await connection.fetchval("SELECT pg_get_serial_sequence($1, $2)", quote(plan.name), column.name)
                if sequence is None:
                    continue
                highest = await connection.fetchval(f"SELECT max({quote(column.name)}) FROM {quote(plan.name)}")
                restart = "RESTART" if highest is None else f"RESTART WITH {int(highest) + 1}"
                await connection.execute(f"ALTER SEQUENCE {sequence} {restart}")
                log.info("%s: next %s will be %s", plan.name, column.name, "the first" if highest is None else highest + 1)


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
        path = Path(url.database)
        return (os.path.realpath(path),)
    return (url.host or "localhost", url.port or 5432, url.database, url.query.get("host"))


def print_figures(figures: list[TableFigures]) -> None:
    print(f"{'table':<20} {'source rows':>12} {'target rows':>12}  {'source sha256':<16}  {'target sha256':<16}  verdict")
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
    parser.add_argument("--replace", action="store_true", help="empty the target's tables first, in the same transaction")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per read from the source")
    parser.add_argument("--db-wait", help="seconds to keep retrying an unreachable database [DB_WAIT] (default 30)")
    parser.add_argument("--migration-lock-timeout", help="seconds to wait for another migrator [MIGRATION_LOCK_TIMEOUT]")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be 1 or more")
    return args


def load_side(url: str, args: argparse.Namespace) -> Settings:
    """Settings for one side, read as the server reads them: flags, then the environment, then defaults."""
    flags = [f"--database-url={url}"]
    flags += [f"--{name}={value}" for name, value in (("db-wait", args.db_wait),
              ("migration-lock-timeout", args.migration_lock_timeout)) if value is not None]
    return load_settings(flags)


def main(argv: Sequence[str]) -> int:
    configure_logging()
    try:
        args = parse_args(argv)
        source, target = load_side(args.source, args), load_side(args.target, args)
        transfer = Transfer(source, target, args.replace, args.batch_size, bar=sys.stderr.isatty())
    except SettingsError as exc:
        log.error("bad settings: %s", mask_passwords(str(exc)))
        return EXIT_FAILED
    except TransferError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    return asyncio.run(run(transfer))


async def run(transfer: Transfer) -> int:
    task = asyncio.current_task()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if transfer.committing:
            log.warning("%s received while committing: the commit finishes first", signal.Signals(signum).name)
        elif not received:
            received.append(signum)
            task.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await transfer.run()
    except asyncio.CancelledError:
        if not received:
            raise
        name = signal.Signals(received[0]).name
        log.error("interrupted by %s: nothing was committed, the target is as it was", name)
        return 128 + received[0]
    except TransferError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except Exception as exc:  # a bug: still one line (the traceback at debug level), still nothing committed
        log.debug("transfer failed", exc_info=True)
        log.error("transfer failed: %s", describe(exc, transfer.target))
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
