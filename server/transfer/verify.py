"""Counts and checksums, the same on every side of every direction.

A table's checksum is SHA-256 over its columns' digests. A column's digest is SHA-256 over its values in
primary-key order, each written as PostgreSQL's COPY text format writes it (backslash escapes, \\N for NULL,
timestamps as microseconds since 2000-01-01 UTC) and ended by a newline. Column by column, because the text
then comes from whole columns at C speed (a join, orjson, bytes.replace), where row by row it would cost a
Python call per row; PostgreSQL writes that text itself (timestamps excepted: it sends their 8 bytes, which
cost it far less than the numbers, see canonical_sent), and it is split into columns as it streams in.
Both sides hash the same bytes exactly when the data match.

Between two PostgreSQL databases the rows never come to this process: each side checks them where they lie
(postgres.checksum_query), and the figure differs from this one.
"""

import binascii
import dataclasses
import hashlib
import re
import struct

import orjson

from server.errors import TransferFailed
from server.transfer.plan import Kind

SEPARATOR = "\x00"  # PostgreSQL text cannot hold NUL, so no value that can be copied contains it
COPY_SPECIAL = re.compile(r"[\\\x08-\x0d]")  # what COPY's text format escapes: backslash, \b \t \n \v \f \r
COPY_SPECIAL_BYTES = re.compile(rb"[\\\x08-\x0d]")
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
# A bigint PostgreSQL sent as bytea (int8send, timestamptz_send), in COPY's text format: \\x and 16 hex digits.
SENT_PREFIX = b"\\\\x"
SENT_WIDTH = len(SENT_PREFIX) + 16


@dataclasses.dataclass(frozen=True)
class TableCheck:
    """What one side holds of a table."""

    rows: int
    checksum: str


@dataclasses.dataclass(frozen=True)
class TableFigures:
    name: str
    source: TableCheck
    target: TableCheck

    @property
    def match(self) -> bool:
        return self.source == self.target


def canonical_column(kind: Kind, values: list, has_nulls: bool) -> bytes:
    """A column of transfer values as COPY's text format writes it, one value per line."""
    if kind == "text":
        if has_nulls:
            return "".join(COPY_NULL + "\n" if v is None else escape(v) + "\n" for v in values).encode()
        joined = SEPARATOR.join(values)
        if COPY_SPECIAL.search(joined):
            joined = escape(joined)
        return (joined.replace(SEPARATOR, "\n") + "\n").encode()
    # ints, bools and microsecond counts: orjson writes the list at C speed, in the right form but for these
    text = orjson.dumps(values)[1:-1].replace(b",", b"\n") + b"\n"
    if kind == "bool":
        text = text.replace(b"true", b"t").replace(b"false", b"f")
    return text.replace(b"null", COPY_NULL.encode()) if has_nulls else text


def canonical_text(joined: bytes, separator: bytes) -> bytes:
    """A column of text without NULLs, its values in UTF-8 joined by `separator`, as canonical_column writes
    it: escaped on bytes, one byte a character where a str holding an emoji takes four (UTF-8 puts no byte
    below 128 inside a character, so the escapes and the separator are found as they are)."""
    if COPY_SPECIAL_BYTES.search(joined):
        for char, escaped in COPY_ESCAPES:
            joined = joined.replace(char.encode(), escaped.encode())
    return joined.replace(separator, b"\n") + b"\n"


def canonical_sent(fields: list[bytes]) -> bytes:
    """A column of 64-bit integers as PostgreSQL sent them (bytea, big-endian) written as canonical_column
    writes integers: decoded all at once, where a conversion per value would cost a Python call each."""
    joined = b"".join(fields)
    if len(joined) != SENT_WIDTH * len(fields) or joined.count(SENT_PREFIX) != len(fields):  # a NULL among them
        values = [
            None
            if f == COPY_NULL.encode()
            else int.from_bytes(binascii.a2b_hex(f[len(SENT_PREFIX) :]), "big", signed=True)
            for f in fields
        ]
        return canonical_column("int", values, None in values)
    raw = binascii.a2b_hex(joined.replace(SENT_PREFIX, b""))
    return canonical_column("int", struct.unpack(f">{len(fields)}q", raw), False)


def escape(text: str) -> str:
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

    def add_values(self, kinds: list[Kind], records: list[tuple]) -> None:
        """Rows of transfer values, as a source that reads rows (not columns) has them."""
        if not records:
            return
        columns = list(zip(*records, strict=True))
        self.add_columns(
            [canonical_column(k, list(c), None in c) for k, c in zip(kinds, columns, strict=True)], len(records)
        )

    def add_copy_text(self, data: bytes, sent: frozenset[int] = frozenset()) -> None:
        """A piece of a COPY ... TO STDOUT stream (text format): split into columns at C speed. The columns
        in `sent` hold 64-bit integers in their binary form (see canonical_sent)."""
        data = self._partial + data
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        if not end:
            return
        # Inside a value tab and newline are escaped, so the raw ones are the only separators.
        fields = data[:end].replace(b"\n", b"\t").split(b"\t")[:-1]
        width = len(self.columns)
        columns = [fields[i::width] for i in range(width)]
        self.add_columns(
            [canonical_sent(c) if i in sent else b"\n".join(c) + b"\n" for i, c in enumerate(columns)],
            len(fields) // width,
        )

    def check(self) -> TableCheck:
        if self._partial:
            raise TransferFailed("target: the COPY stream ended in the middle of a row")
        return TableCheck(self.rows, hashlib.sha256(b"".join(d.digest() for d in self.columns)).hexdigest())
