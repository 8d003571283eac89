"""SQLite as a source (read on a thread, in one read transaction) and as a target (one BEGIN IMMEDIATE)."""

import concurrent.futures
import contextlib
import dataclasses
import datetime
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from server.db import SQLITE_BUSY_TIMEOUT
from server.errors import TransferFailed, describe
from server.migrations.heads import SELECT_VERSIONS
from server.settings import Settings
from server.transfer.plan import (
    MICROSECOND,
    PG_EPOCH,
    PG_EPOCH_NAIVE,
    PG_EPOCH_SECONDS_SINCE_1970,
    UTC,
    Batch,
    ColumnPlan,
    Kind,
    TablePlan,
    quote,
)
from server.transfer.stream import Form, Outbox, Snapshot, TableRead, TableStart
from server.transfer.verify import SEPARATOR, ColumnDigests, TableCheck, canonical_column, canonical_text

# SQLite concatenates a column faster with a literal separator, and SQL text cannot hold NUL: a rare
# character instead, and a chunk where some value holds it is read again joined by NUL.
READ_SEPARATOR = "\x1f"
READ_BACK_ROWS = 5_000  # rows per read when a target checks what it wrote
# What SQLAlchemy writes for a DateTime: the text every reader of the file (the server included) expects.
# From microseconds since 2000-01-01 in SQL, so that SQLite formats each row in C.
_MICROS = "((({v} % 1000000) + 1000000) % 1000000)"  # the fraction, also before 1970 (% keeps the sign)
_SECONDS = f"(({{v}} - {_MICROS}) / 1000000 + {PG_EPOCH_SECONDS_SINCE_1970})"
TIMESTAMP_TEXT = f"strftime('%Y-%m-%d %H:%M:%S', {_SECONDS}, 'unixepoch') || printf('.%06d', {_MICROS})"


def _open(path: Path, mode: str, **options) -> sqlite3.Connection:
    """The file by URI, so that `mode` holds: ro never writes, rw never creates. Waits for a writer's lock
    up to SQLITE_BUSY_TIMEOUT."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True, timeout=SQLITE_BUSY_TIMEOUT, **options)


async def read_versions(settings: Settings) -> list[str] | None:
    """The revisions the file records, read without changing it; None if there is no file or no record."""
    path = Path(settings.database_url.database)
    if not path.is_file():
        return None
    try:
        with contextlib.closing(_open(path, "ro")) as db:
            return [version for (version,) in db.execute(SELECT_VERSIONS)]
    except sqlite3.Error:
        return None


class SqliteSource:
    """Each chunk is one query that returns each column as a single string (group_concat): SQLite builds it
    without holding the GIL, one split gives the column back, and the conversions then work on whole
    columns. Row by row, the sqlite3 module spends most of its time making tuples."""

    def __init__(self, settings: Settings):
        self.path = Path(settings.database_url.database)

    def check_reachable(self) -> None:
        if self.path.is_dir():
            raise TransferFailed(f"source unreachable: {self.path} is a directory, not an SQLite file")
        if not self.path.is_file():
            raise TransferFailed(f"source unreachable: SQLite file {self.path} does not exist")

    def read(self, plans: list[TablePlan], batch_size: int, form: Form, out: Outbox) -> None:
        """Values whatever the form: every target takes them."""
        try:
            with contextlib.closing(_open(self.path, "ro", isolation_level=None, check_same_thread=False)) as db:
                db.execute("BEGIN")  # one snapshot for every table, and for the revision check
                out.put(Snapshot(tuple(v for (v,) in db.execute(SELECT_VERSIONS))))
                for plan in plans:
                    out.put(TableStart(db.execute(f"SELECT count(*) FROM {quote(plan.name)}").fetchone()[0]))
                    digests = ColumnDigests(len(plan.columns))  # hashed here: it lets go of the GIL meanwhile
                    for batch, canonical in read_chunks(db, plan, batch_size, lambda: out.stopped):
                        digests.add_columns(canonical, batch.rows)
                        out.put(batch)
                    out.put(digests.check())
        except sqlite3.Error as exc:
            raise TransferFailed(f"source: {describe(exc)}") from None


class SqliteTarget:
    """Writes in one BEGIN IMMEDIATE transaction on the event loop's thread, batch by batch, and reads the
    rows back on the same connection before it commits.

    Blocking calls on the loop's thread: each is one batch, and between batches the reader's wait notices
    a signal; there is nothing else for the loop to do meanwhile.
    """

    takes: Form = "values"

    def __init__(self, settings: Settings, stop_here: Callable[[], None]):
        self.path = Path(settings.database_url.database)
        self.stop_here = stop_here
        self._db: sqlite3.Connection | None = None

    async def begin(self, plans: list[TablePlan], replace: bool) -> None:
        try:
            # mode=rw: the upgrade made the file; a target that vanished since must not come back empty.
            self._db = _open(self.path, "rw", isolation_level=None, check_same_thread=False)
            # IMMEDIATE: the write lock now, not at the first insert (see DESIGN "Known traps").
            self._db.execute("BEGIN IMMEDIATE")
            if not replace:
                exists = "SELECT EXISTS (SELECT 1 FROM {})"
                full = [p.name for p in plans if self._db.execute(exists.format(quote(p.name))).fetchone()[0]]
                if full:
                    raise TransferFailed(
                        f"target table {', '.join(full)} already holds rows; nothing was written "
                        "(--replace empties the target's tables in the same transaction)"
                    )
            for plan in reversed(plans):  # children before parents, for foreign keys
                self._db.execute(f"DELETE FROM {quote(plan.name)}")
        except sqlite3.Error as exc:
            raise self._failed(exc) from None

    async def copy(self, plan: TablePlan, table: TableRead) -> TableCheck:
        assert self._db is not None
        names = ", ".join(quote(c.name) for c in plan.columns)
        values = ", ".join(_parameter(c, i) for i, c in enumerate(plan.columns, 1))
        insert = f"INSERT INTO {quote(plan.name)} ({names}) VALUES ({values})"
        try:
            for batch in table.batches():
                self._db.executemany(insert, batch.records)
            digests = ColumnDigests(len(plan.columns))
            for batch, canonical in read_chunks(self._db, plan, READ_BACK_ROWS, lambda: False):
                self.stop_here()
                digests.add_columns(canonical, batch.rows)
        except sqlite3.Error as exc:
            raise self._failed(exc) from None
        return digests.check()

    async def commit(self, plans: list[TablePlan]) -> None:
        # No sequences to restart: an INTEGER PRIMARY KEY takes max + 1 by itself, and an AUTOINCREMENT
        # table's counter in sqlite_sequence rises with the explicit ids inserted.
        assert self._db is not None
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._failed(exc) from None

    async def close(self) -> None:
        if self._db is None:
            return
        with contextlib.suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        self._db.close()
        self._db = None

    def _failed(self, exc: sqlite3.Error) -> TransferFailed:
        return TransferFailed(f"target: {describe(exc)}; rolled back, the target is as it was")


def _parameter(column: ColumnPlan, number: int) -> str:
    if column.is_timestamp:
        return TIMESTAMP_TEXT.format(v=f"?{number}")
    return f"?{number}"


def read_chunks(
    db: sqlite3.Connection, plan: TablePlan, batch_size: int, stopped: Callable[[], bool]
) -> Iterator[tuple[Batch, list[bytes]]]:
    """A table in key order, a batch at a time: its rows as transfer values, and the text its checksum covers.

    SQLite reads the next chunk on a thread of its own while this one is converted: its query lets go of
    the GIL, and the conversion is the other half of the reader's time. The connection is used by one
    thread at a time (opened with check_same_thread=False for that)."""
    fast, safe = _chunk_queries(plan, f"'{READ_SEPARATOR}'"), _chunk_queries(plan, "char(0)")

    def read_after(after: list) -> _Chunk:
        read = _read(db, fast, READ_SEPARATOR, after, plan, batch_size)
        if read is None:  # a value holds the separator: read this chunk again, joined by NUL
            read = _read(db, safe, SEPARATOR, after, plan, batch_size)
        if read is None:
            raise _Nul
        if read.count and read.separator != SEPARATOR and any(SEPARATOR in joined for joined in read.columns):
            raise _Nul
        return read

    # Leaving the block waits for a read still in flight: the caller may use the connection once we return.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite-read-ahead") as ahead:
        following = ahead.submit(read_after, [])
        while not stopped():
            try:
                read = following.result()
            except _Nul:
                raise _nul_error(db, plan) from None
            if not read.count:
                return
            after = [read.columns[i].rpartition(read.separator)[2] for i in plan.key]
            following = ahead.submit(read_after, after)
            yield prepare(plan, read)
        following.cancel()


class _Nul(Exception):
    """A chunk holds a NUL character: found and named on the caller's thread."""


@dataclasses.dataclass(frozen=True)
class _Chunk:
    """Up to a batch of rows, each column joined into one string."""

    count: int
    columns: list[str]
    nulls: list[list[int]]  # per column, the positions that were NULL
    separator: str
    texts: dict[int, bytes]  # the text columns as SQLite gave them: UTF-8, the checksum's text at C speed


def _read(
    db: sqlite3.Connection, queries: tuple[str, str], separator: str, after: list, plan: TablePlan, batch_size: int
) -> _Chunk | None:
    """The rows after key `after`, each column joined by `separator`; None if a value holds it."""
    first, following = queries
    cursor = db.execute(following, (*after, batch_size)) if after else db.execute(first, (batch_size,))
    count, *columns = cursor.fetchone()
    width = len(plan.columns)
    texts = {i: columns[i] for i, c in enumerate(plan.columns) if c.kind == "text" and count}
    encoded = separator.encode()
    if count and any(
        (joined.count(encoded) if i in texts else joined.count(separator)) != count - 1
        for i, joined in enumerate(columns[:width])
    ):
        return None
    for i, joined in texts.items():
        try:
            columns[i] = joined.decode()
        except UnicodeDecodeError as exc:
            value = joined.split(encoded)[joined.count(encoded, 0, exc.start)]
            raise _not_utf8(db, plan, plan.columns[i], value) from None
    nulls: list[list[int]] = [[] for _ in range(width)]
    masks = iter(columns[width:])
    for i, column in enumerate(plan.columns):
        if count and column.nullable:
            nulls[i] = [position for position, flag in enumerate(next(masks)) if flag == "1"]
    return _Chunk(count, columns[:width], nulls, separator, texts)


def _nul_error(db: sqlite3.Connection, plan: TablePlan) -> TransferFailed:
    for column in plan.columns:
        key = _key_where(db, plan, f"instr({quote(column.name)}, char(0)) > 0")
        if key is not None:
            return TransferFailed(
                f"source: {plan.name}.{column.name} of the row with key {key!r} holds a NUL character, "
                "which PostgreSQL cannot store"
            )
    return TransferFailed(f"source: a value in table {plan.name} holds a NUL character, which PostgreSQL cannot store")


def _not_utf8(db: sqlite3.Connection, plan: TablePlan, column: ColumnPlan, value: bytes) -> TransferFailed:
    """SQLite stores TEXT as it is given; text that is not UTF-8 has no faithful copy anywhere else."""
    key = _key_where(db, plan, f"CAST({quote(column.name)} AS BLOB) = ?", (value,))
    return TransferFailed(
        f"source: {plan.name}.{column.name} of the row with key {'?' if key is None else key!r} holds text "
        f"that is not UTF-8: {value[:60]!r}"
    )


def _key_where(db: sqlite3.Connection, plan: TablePlan, condition: str, parameters: tuple = ()) -> object:
    """The key of the first row where `condition` holds, or None: what an error names the row by."""
    # Text keys as bytes: they may not be UTF-8 either.
    keys = ", ".join(f"CAST({quote(c.name)} AS BLOB)" if c.kind == "text" else quote(c.name) for c in plan.key_columns)
    found = db.execute(f"SELECT {keys} FROM {quote(plan.name)} WHERE {condition}", parameters).fetchone()
    if found is None:
        return None
    key = tuple(part.decode(errors="replace") if isinstance(part, bytes) else part for part in found)
    return key[0] if len(key) == 1 else key


def _chunk_queries(plan: TablePlan, separator: str) -> tuple[str, str]:
    """The SQL for a table's first chunk and for the chunk after a key: each column as one string."""
    names = [quote(c.name) for c in plan.columns]
    keys = [names[i] for i in plan.key]
    # group_concat skips NULLs, so nullable columns read '' and a mask of which ones were NULL.
    values = [f"ifnull({n}, '')" if c.nullable else n for n, c in zip(names, plan.columns, strict=True)]
    # Text as a BLOB: its UTF-8 bytes, which the checksum covers, without a decode to (often UCS-4) str first.
    aggregates = [
        f"CAST(group_concat({v}, {separator}) AS BLOB)" if c.kind == "text" else f"group_concat({v}, {separator})"
        for v, c in zip(values, plan.columns, strict=True)
    ]
    aggregates += [f"group_concat({n} IS NULL, '')" for n, c in zip(names, plan.columns, strict=True) if c.nullable]
    inner = f"SELECT {', '.join(names)} FROM {quote(plan.name)} {{where}} ORDER BY {', '.join(keys)} LIMIT ?"
    # Every aggregate reads the same ordered rows in one pass, so the columns stay aligned.
    outer = f"SELECT count(*), {', '.join(aggregates)} FROM ({inner})"
    where = f"WHERE ({', '.join(keys)}) > ({', '.join('?' * len(keys))})"
    return outer.format(where=""), outer.format(where=where)


def prepare(plan: TablePlan, read: _Chunk) -> tuple[Batch, list[bytes]]:
    """Rows as transfer values, and per column the text the checksum covers."""
    raw = [joined.split(read.separator) for joined in read.columns]
    values = [convert(plan.name, c, r, n) for c, r, n in zip(plan.columns, raw, read.nulls, strict=True)]
    canonical = [
        canonical_text(read.texts[i], read.separator.encode())
        if i in read.texts and not nulls
        else canonical_column(column.kind, column_values, bool(nulls))
        for i, (column, column_values, nulls) in enumerate(zip(plan.columns, values, read.nulls, strict=True))
    ]
    # Rows made as they are written (a tuple Python may reuse), not all at once here.
    return Batch(read.count, zip(*values, strict=True), tuple(values[i][-1] for i in plan.key)), canonical


_KIND_WORDS = {
    "int": "an integer",
    "bool": "a boolean (0 or 1)",
    "text": "text",
    "timestamptz": "a timestamp",
    "timestamp": "a timestamp",
}
_PLACEHOLDER = {"int": "0", "bool": "0", "text": "", "timestamptz": "2000-01-01", "timestamp": "2000-01-01"}


def convert(table: str, column: ColumnPlan, raw: list[str], nulls: list[int]) -> list:
    """SQLite's text of a column as transfer values (None for NULL)."""
    if nulls:
        raw = list(raw)
        for position in nulls:
            raw[position] = _PLACEHOLDER[column.kind]
    try:
        values = _CONVERT[column.kind](raw)
    except (ValueError, TypeError):
        bad = next(v for v in raw if not _converts(column.kind, v))
        raise TransferFailed(
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


_CONVERT: dict[Kind, Callable[[list[str]], list]] = {
    "int": lambda raw: list(map(int, raw)),
    "bool": _to_bool,
    "text": lambda raw: raw,
    "timestamptz": _to_microseconds,
    "timestamp": _to_microseconds,
}


def _converts(kind: Kind, value: str) -> bool:
    try:
        _CONVERT[kind]([value])
        return True
    except (ValueError, TypeError):
        return False
