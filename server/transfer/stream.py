"""The interface each dialect implements, and the thread that carries a source's rows to the target.

A source reads on a thread of its own, so that its work (a query, conversions, the source's checksum)
runs while the event loop's thread feeds the target; a bounded queue between them keeps memory flat in the
row count. The target pulls from it with plain calls: asyncpg encodes a COPY from a plain generator in C.
"""

import contextlib
import dataclasses
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Literal, Protocol, TypeVar

from server.errors import TransferFailed
from server.transfer.plan import Batch, TablePlan
from server.transfer.verify import TableCheck

READ_AHEAD = 8  # batches the reader thread may hold ready


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The source's revisions, read in the same snapshot as its rows."""

    versions: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TableStart:
    rows: int  # as counted in the snapshot: for progress


@dataclasses.dataclass(frozen=True)
class CopyChunk:
    """A piece of a table in PostgreSQL's binary COPY format: from a PostgreSQL source to a PostgreSQL target
    as it is, never decoded on the way."""

    data: bytes


# What a target takes: transfer values (every target), or also PostgreSQL's binary COPY stream.
Form = Literal["values", "postgres-binary"]
Message = Snapshot | TableStart | Batch | CopyChunk | TableCheck
M = TypeVar("M", Snapshot, TableStart)


class Stopped(Exception):
    """The consumer closed the stream: the reader stops quietly."""


class Outbox:
    """The reader thread's end of the queue."""

    def __init__(self, messages: queue.Queue, stop: threading.Event):
        self._messages, self._stop = messages, stop

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def put(self, message: Message | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._messages.put(message, timeout=0.1)
                return
            except queue.Full:
                continue
        raise Stopped


class Source(Protocol):
    """A database to copy from, read-only."""

    def check_reachable(self) -> None:
        """Raise TransferFailed if it is plainly not there, before anything is opened."""

    def read(self, plans: list[TablePlan], batch_size: int, form: Form, out: Outbox) -> None:
        """On the reader thread, in one read-only snapshot: a Snapshot, then for each table in order a
        TableStart, its rows in key order (Batches, or CopyChunks if `form` allows and the source can) and
        its TableCheck."""


class Target(Protocol):
    """A database to copy into, in one transaction that commits only when told."""

    takes: Form

    async def begin(self, plans: list[TablePlan], replace: bool) -> None:
        """Connect, open the transaction, take the tables; refuse rows already there unless `replace`."""

    async def copy(self, plan: TablePlan, table: "TableRead") -> TableCheck:
        """Write the table's batches, then read them back: what the target now holds."""

    async def commit(self, plans: list[TablePlan]) -> None:
        """Anything left to set (sequences), then commit."""

    async def close(self) -> None:
        """Roll back whatever is not committed and let go of the database, promptly."""


@dataclasses.dataclass
class TableRead:
    """One table as it comes from the source: its row count, its batches, then the source's check."""

    rows: int
    _reader: "Reader"
    check: TableCheck | None = None

    def pieces(self) -> Iterator[Batch | CopyChunk]:
        reported = 0
        while True:
            message = self._reader.next()
            if isinstance(message, TableCheck):
                self.check = message
                self._reader.on_rows(message.rows - reported)  # rows no piece counted (COPY chunks)
                return
            if not isinstance(message, Batch | CopyChunk):
                raise TransferFailed(f"source: expected rows, got {type(message).__name__}")
            if isinstance(message, Batch):
                reported += message.rows
                self._reader.on_rows(message.rows)
            yield message

    def batches(self) -> Iterator[Batch]:
        """The pieces of a target that takes values only."""
        for piece in self.pieces():
            if not isinstance(piece, Batch):
                raise TransferFailed(f"source: sent {type(piece).__name__}, which this target does not take")
            yield piece


class Reader:
    """The consumer's end: starts the source's thread, hands out its messages, and stops it."""

    def __init__(
        self, source: Source, plans: list[TablePlan], batch_size: int, form: Form, stop_here: Callable[[], None]
    ):
        self.stop_here = stop_here  # raises if a signal asked to stop: checked while waiting
        self.on_rows: Callable[[int], None] = lambda rows: None
        self._messages: queue.Queue = queue.Queue(READ_AHEAD)
        self._stop = threading.Event()
        outbox = Outbox(self._messages, self._stop)
        self._thread = threading.Thread(
            target=self._run, args=(source, plans, batch_size, form, outbox), name="transfer-reader", daemon=True
        )

    def start(self) -> Snapshot:
        self._thread.start()
        return self._expect(Snapshot)

    def table(self) -> TableRead:
        return TableRead(self._expect(TableStart).rows, self)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:  # unblock a put() so the thread sees the stop
                self._messages.get_nowait()
        self._thread.join(10)

    def next(self) -> Message:
        while True:
            self.stop_here()
            try:
                message = self._messages.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive():  # a bug there must not leave this waiting forever
                    raise TransferFailed("source: the reader thread stopped without a word") from None
        if isinstance(message, BaseException):
            raise message
        return message

    def _expect(self, kind: type[M]) -> M:
        message = self.next()
        if not isinstance(message, kind):
            raise TransferFailed(f"source: expected {kind.__name__}, got {type(message).__name__}")
        return message

    @staticmethod
    def _run(source: Source, plans: list[TablePlan], batch_size: int, form: Form, out: Outbox) -> None:
        try:
            source.read(plans, batch_size, form, out)
        except Stopped:
            pass
        except BaseException as exc:  # handed to the consumer, which reports it
            with contextlib.suppress(Stopped):
                out.put(exc)
