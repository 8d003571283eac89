"""PostgreSQL as a source (one REPEATABLE READ, READ ONLY snapshot, read on the reader's thread) and as a
target (binary COPY in one transaction, read back as it goes)."""

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Iterator

import asyncpg

from server.db import CONNECT_TIMEOUT
from server.errors import TransferFailed, describe
from server.migrations.heads import SELECT_VERSIONS
from server.settings import Settings
from server.transfer.plan import PG_EPOCH_SECONDS_SINCE_1970, Batch, ColumnPlan, TablePlan, quote
from server.transfer.stream import CopyChunk, Form, Outbox, Snapshot, TableRead, TableStart
from server.transfer.verify import ColumnDigests, TableCheck

log = logging.getLogger("server.transfer")

PART_ROWS = 100_000  # rows per COPY before that part is read back (see PostgresTarget.copy)
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


async def read_versions(settings: Settings) -> list[str] | None:
    """The revisions the database records; None if it does not answer or records none."""
    try:
        connection = await connect(settings, "head check")
    except TransferFailed:  # unreachable: the migrator waits for it and says why
        return None
    try:
        return [version for (version,) in await connection.fetch(SELECT_VERSIONS)]
    except DRIVER_ERRORS:
        return None
    finally:
        connection.terminate()  # it only read


class PostgresSource:
    def __init__(self, settings: Settings):
        self.settings = settings

    def check_reachable(self) -> None:
        """Nothing to look at before connecting: the migrator's status check reaches it first."""

    def read(self, plans: list[TablePlan], batch_size: int, form: Form, out: Outbox) -> None:
        # The reader's thread has no loop of its own: one for these connections alone.
        asyncio.run(self._read(plans, batch_size, form, out))

    async def _read(self, plans: list[TablePlan], batch_size: int, form: Form, out: Outbox) -> None:
        connections = [await connect(self.settings, "source")]
        try:
            first = connections[0]
            await first.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            out.put(Snapshot(tuple(v for (v,) in await first.fetch(SELECT_VERSIONS))))
            if form == "postgres-binary":
                # A second connection in the same snapshot computes the checksum while the first streams
                # the rows: two queries at once on the server instead of one after the other.
                snapshot = await first.fetchval("SELECT pg_export_snapshot()")
                connections.append(await connect(self.settings, "source"))
                await connections[1].execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                await connections[1].execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                # It runs while the rows stream: parallel workers would take the cores the COPY needs.
                await connections[1].execute("SET LOCAL max_parallel_workers_per_gather = 0")
            for plan in plans:
                # fetch, not fetchval: a query asked for one row at a time gets no parallel workers.
                ((rows,),) = await first.fetch(f"SELECT count(*) FROM {quote(plan.name)}")
                out.put(TableStart(rows))
                if form == "postgres-binary":
                    out.put(await _stream(first, connections[1], plan, out))
                else:
                    out.put(await _values(first, plan, batch_size, out))
        except DRIVER_ERRORS as exc:
            raise TransferFailed(f"source: {describe(exc, self.settings.database_url)}") from None
        finally:
            for connection in connections:
                connection.terminate()  # read-only: nothing to finish


async def _values(connection: asyncpg.Connection, plan: TablePlan, batch_size: int, out: Outbox) -> TableCheck:
    """A table as Batches of transfer values, hashed as they go."""
    digests = ColumnDigests(len(plan.columns))
    kinds = [c.kind for c in plan.columns]
    cursor = await connection.cursor(rows_query(plan, False, False))
    while records := await cursor.fetch(batch_size):
        digests.add_values(kinds, records)
        out.put(Batch(len(records), records, tuple(records[-1][i] for i in plan.key)))
    return digests.check()


async def _stream(
    connection: asyncpg.Connection, checksummer: asyncpg.Connection, plan: TablePlan, out: Outbox
) -> TableCheck:
    """A table as its binary COPY stream, and its checksum from the other connection meanwhile."""

    async def send(data: bytes) -> None:
        out.put(CopyChunk(data))

    checksum = asyncio.ensure_future(checksummer.fetch(checksum_query(plan)))
    # When the stream fails or is stopped, the checksum is cancelled under a connection about to be ended, and
    # whatever it then raises is moot: taken here, so asyncio does not log it as never retrieved.
    checksum.add_done_callback(lambda task: task.cancelled() or task.exception())
    try:
        # The table as stored, in no particular order: the checksums do not depend on it, and a plain COPY
        # scans the table where an ORDER BY would walk its index.
        columns = [c.name for c in plan.columns]
        await connection.copy_from_table(plan.name, columns=columns, output=send, format="binary")
        return table_check(await checksum)
    finally:
        checksum.cancel()


class PostgresTarget:
    """Takes the tables until commit, COPYs each in parts of PART_ROWS, each read back right after it is
    written: while PostgreSQL reads a part back, the reader goes on preparing the next one, so its work
    hides behind the verification, and a mismatch shows early."""

    takes: Form = "postgres-binary"

    def __init__(self, settings: Settings):
        self.settings = settings
        self._connection: asyncpg.Connection | None = None
        self._committed = False

    async def begin(self, plans: list[TablePlan], replace: bool) -> None:
        self._connection = connection = await connect(self.settings, "target")
        # Timestamps travel as microsecond counts since 2000-01-01, which is what a binary timestamp is on the
        # wire: asyncpg packs them with its own int8 codec, in C (a Python encoder would be a call per value,
        # and asyncpg's datetime codec would convert every value to UTC first).
        for type_name in ("timestamptz", "timestamp"):
            await connection.set_builtin_type_codec(type_name, schema="pg_catalog", codec_name="int8")
        with self._errors():
            await connection.execute("BEGIN")
            names = ", ".join(quote(p.name) for p in plans)
            await connection.execute(f"SET LOCAL lock_timeout = {int(self.settings.ddl_lock_timeout * 1000)}")
            # Readers of these tables wait, and then see every row at once.
            await connection.execute(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
            if not replace:
                exists = "SELECT EXISTS (SELECT 1 FROM {})"
                full = [p.name for p in plans if await connection.fetchval(exists.format(quote(p.name)))]
                if full:
                    raise TransferFailed(
                        f"target table {', '.join(full)} already holds rows; nothing was written "
                        "(--replace empties the target's tables in the same transaction)"
                    )
            # Even when empty: a fresh file and index, where deleted rows not yet vacuumed would make every
            # insert check its key against them. Like all of this, undone by a rollback.
            await connection.execute(f"TRUNCATE {names}")

    async def copy(self, plan: TablePlan, table: TableRead) -> TableCheck:
        assert self._connection is not None
        digests = ColumnDigests(len(plan.columns))
        columns = [c.name for c in plan.columns]
        pieces = table.pieces()
        first = next(pieces, None)
        with self._errors():
            if isinstance(first, CopyChunk):  # from PostgreSQL: as it came, then checked where it lies
                await self._connection.copy_to_table(
                    plan.name, source=_chunks(first, pieces), columns=columns, format="binary"
                )
                return table_check(await self._connection.fetch(checksum_query(plan)))
            lower: tuple | None = None  # the last key of the part before
            batch = first
            while batch is not None:
                part = _Part(batch, pieces)
                await self._connection.copy_records_to_table(plan.name, records=part.records(), columns=columns)
                # The last part's range is left open, so the check would see any row beyond it.
                upper = part.last_key if part.following is not None else None
                await self._read_back(plan, digests, lower, upper)
                lower, batch = part.last_key, part.following
            if lower is None:  # no rows: still look, the table must be empty
                await self._read_back(plan, digests, None, None)
        return digests.check()

    async def commit(self, plans: list[TablePlan]) -> None:
        assert self._connection is not None
        with self._errors():
            await self._restart_sequences(plans)
            await self._connection.execute("COMMIT")
        self._committed = True

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._committed:
            with contextlib.suppress(*DRIVER_ERRORS):
                await connection.close(timeout=5)
        else:
            await self._end_backend(connection)
        if not connection.is_closed():
            connection.terminate()  # whatever is not committed dies with the connection

    async def _end_backend(self, connection: asyncpg.Connection) -> None:
        """End our server process from a second connection: the rollback happens now, even if it is busy
        (a long read, a slow trigger) and would notice the dropped connection only later."""
        with contextlib.suppress(Exception):
            other = await asyncpg.connect(dsn(self.settings), timeout=3)
            try:
                await asyncio.wait_for(other.execute(f"SELECT pg_terminate_backend({connection.get_server_pid()})"), 3)
            finally:
                other.terminate()

    async def _read_back(self, plan: TablePlan, digests: ColumnDigests, lower: tuple | None, upper: tuple | None):
        sent = frozenset(i for i, c in enumerate(plan.columns) if c.is_timestamp)

        async def take(data: bytes) -> None:
            digests.add_copy_text(data, sent)

        assert self._connection is not None
        query = rows_query(plan, lower is not None, upper is not None, timestamps_sent=True)
        await self._connection.copy_from_query(query, *(lower or ()), *(upper or ()), output=take)

    async def _restart_sequences(self, plans: list[TablePlan]) -> None:
        """The next insert gets max(id) + 1. ALTER SEQUENCE rather than setval(): it rolls back with the rest."""
        assert self._connection is not None
        for plan in plans:
            for column in (c for c in plan.key_columns if c.kind == "int"):
                sequence = await self._connection.fetchval(
                    "SELECT pg_get_serial_sequence($1, $2)", quote(plan.name), column.name
                )
                if sequence is None:
                    continue
                highest = await self._connection.fetchval(f"SELECT max({quote(column.name)}) FROM {quote(plan.name)}")
                await self._connection.execute(
                    f"ALTER SEQUENCE {sequence} RESTART" + ("" if highest is None else f" WITH {highest + 1}")
                )
                log.info(
                    "%s: the next %s will be %s",
                    plan.name,
                    column.name,
                    "the first" if highest is None else highest + 1,
                )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except DRIVER_ERRORS as exc:
            raise TransferFailed(
                f"target: {describe(exc, self.settings.database_url)}; rolled back, the target is as it was"
            ) from None


class _Part:
    """The batches of one COPY: from `first` until PART_ROWS rows or the table's end."""

    def __init__(self, first: Batch | CopyChunk, pieces: Iterator[Batch | CopyChunk]):
        self.first, self._pieces = _batch(first), pieces
        self.last_key: tuple = self.first.last_key
        self.following: Batch | None = None  # what starts the next part; None at the table's end

    def records(self) -> Iterator[tuple]:
        # A plain generator: asyncpg encodes from it in C and awaits only when its buffer is full.
        batch, rows = self.first, 0
        while True:
            self.last_key = batch.last_key
            rows += batch.rows
            yield from batch.records
            following = next(self._pieces, None)
            if following is None or rows >= PART_ROWS:
                self.following = None if following is None else _batch(following)
                return
            batch = _batch(following)


def _batch(piece: Batch | CopyChunk) -> Batch:
    if not isinstance(piece, Batch):
        raise TransferFailed("source: a COPY chunk among the rows")
    return piece


async def _chunks(first: CopyChunk, pieces: Iterator[Batch | CopyChunk]) -> AsyncIterator[bytes]:
    # Waiting for the next chunk blocks the loop's thread, as feeding COPY from the records does: between
    # chunks, and the wait notices a signal.
    yield first.data
    for piece in pieces:
        if not isinstance(piece, CopyChunk):
            raise TransferFailed("source: rows among the COPY chunks")
        yield piece.data


def rows_query(plan: TablePlan, lower: bool, upper: bool, timestamps_sent: bool = False) -> str:
    """A table's rows as transfer values in the order every side reads them: those after key $1 (lower) up
    to key $2 or $1 (upper). Its COPY text is exactly what the checksum covers, but for timestamps_sent:
    then timestamps come as their binary form (verify.canonical_sent), which costs PostgreSQL next to
    nothing where the microseconds as numbers cost it half the read (extract() computes in numeric)."""
    expressions = [
        f"{column.kind}_send({quote(column.name)})"
        if timestamps_sent and column.is_timestamp
        else _transfer_value(column)
        for column in plan.columns
    ]
    # COLLATE "C" orders text by code point, as SQLite's default BINARY collation does.
    keys = [quote(c.name) + (' COLLATE "C"' if c.kind == "text" else "") for c in plan.key_columns]
    width = len(keys)
    bounds, number = [], 1
    if lower:
        bounds.append(f"({', '.join(keys)}) > ({', '.join(f'${number + i}' for i in range(width))})")
        number += width
    if upper:
        bounds.append(f"({', '.join(keys)}) <= ({', '.join(f'${number + i}' for i in range(width))})")
    where = f" WHERE {' AND '.join(bounds)}" if bounds else ""
    return f"SELECT {', '.join(expressions)} FROM {quote(plan.name)}{where} ORDER BY {', '.join(keys)}"


def checksum_query(plan: TablePlan) -> str:
    """Between two PostgreSQL databases each side checks its rows where they lie, instead of sending them
    to this process to be hashed: the row count and, per column, the count of values that are not NULL and
    the exact sum of their 64-bit hashes, each hash seeded with its row's key (so values swapped between
    rows show). One scan, in parallel workers where PostgreSQL sees fit; the rows never leave the server."""
    keys = plan.key_columns
    if len(keys) == 1 and keys[0].kind == "int":
        seed = quote(keys[0].name)
    else:
        seed = f"hashtextextended(ROW({', '.join(_checked_value(c) for c in keys)})::text, 0)"
    sums = []
    for column in plan.columns:
        if column.is_timestamp:
            # The interval since 2000-01-01 hashes as its span in microseconds (interval_hash_extended is
            # hashint8extended of it): the same sum as the microseconds' own hashes, without extract(),
            # which computes in numeric and cost more than the rest of the scan.
            zone = "+00" if column.kind == "timestamptz" else ""
            since = f"{quote(column.name)} - {column.kind} '2000-01-01 00:00:00{zone}'"
            hashed = f"interval_hash_extended({since}, {seed})"
        else:
            hash_function = "hashtextextended" if column.kind == "text" else "hashint8extended"
            hashed = f"{hash_function}({_checked_value(column)}, {seed})"
        sums.append(f"count({quote(column.name)}), sum({hashed})")
    return f"SELECT count(*), {', '.join(sums)} FROM {quote(plan.name)}"


def _checked_value(column: ColumnPlan) -> str:
    """A column as the checksum hashes it: its transfer value, text as it is and the rest as bigint."""
    if column.kind == "text":
        return _transfer_value(column)
    if column.kind == "bool":
        return f"{quote(column.name)}::int::bigint"
    return f"({_transfer_value(column)})::bigint"


def _transfer_value(column: ColumnPlan) -> str:
    """A column as the transfer carries it: timestamps as microseconds since 2000-01-01 UTC, the rest as stored."""
    name = quote(column.name)
    if column.is_timestamp:
        return f"(extract(epoch FROM {name}) * 1000000)::bigint - {PG_EPOCH_SECONDS_SINCE_1970 * 1_000_000}"
    return name


def table_check(result: list[asyncpg.Record]) -> TableCheck:
    """A TableCheck from checksum_query's row: its SHA-256, for a figure as short as the other directions'.

    Run with fetch, not fetchrow: PostgreSQL runs a query whose rows are asked for a few at a time without
    parallel workers, and the scan is the whole cost of the check."""
    (aggregates,) = result
    text = ",".join("" if value is None else str(value) for value in aggregates.values())
    return TableCheck(aggregates[0], hashlib.sha256(text.encode()).hexdigest())


def dsn(settings: Settings) -> str:
    return settings.database_url.set(drivername="postgresql").render_as_string(hide_password=False)


async def connect(settings: Settings, side: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(
            dsn(settings),
            timeout=CONNECT_TIMEOUT,
            server_settings={"application_name": f"server.transfer pid {os.getpid()} {side}"},
        )
    except DRIVER_ERRORS as exc:
        raise TransferFailed(f"{side} unreachable: {describe(exc, settings.database_url)}") from None
