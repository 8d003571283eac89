"""What to copy: each table's columns and key, and the values that travel between the dialects."""

import dataclasses
import datetime
from collections.abc import Iterable, Sequence
from typing import Literal

from sqlalchemy import Boolean, Column, DateTime, Integer, String, Table

from server.errors import TransferFailed

Kind = Literal["int", "bool", "text", "timestamptz", "timestamp"]

# A timestamp travels as microseconds since PostgreSQL's epoch (2000-01-01 UTC): what its binary COPY
# takes, an int that every side converts at C speed, and the form the checksum writes.
UTC = datetime.UTC
PG_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=UTC)
PG_EPOCH_NAIVE = PG_EPOCH.replace(tzinfo=None)
PG_EPOCH_SECONDS_SINCE_1970 = 946_684_800
MICROSECOND = datetime.timedelta(microseconds=1)


@dataclasses.dataclass(frozen=True)
class ColumnPlan:
    name: str
    kind: Kind
    nullable: bool

    @property
    def is_timestamp(self) -> bool:
        return self.kind in ("timestamptz", "timestamp")


@dataclasses.dataclass(frozen=True)
class TablePlan:
    name: str
    columns: tuple[ColumnPlan, ...]  # in the table's order
    key: tuple[int, ...]  # positions of the primary-key columns: the order every side is read in

    @property
    def key_columns(self) -> tuple[ColumnPlan, ...]:
        return tuple(self.columns[i] for i in self.key)


@dataclasses.dataclass
class Batch:
    """Consecutive rows of a table in key order: ints, bools, str, timestamps in microseconds, None."""

    rows: int
    records: Iterable[tuple]  # read once, by the target that writes them
    last_key: tuple  # the primary key of the last row


def make_plans(tables: Sequence[Table]) -> list[TablePlan]:
    """What each table needs, refusing up front what the copy would get wrong."""
    plans = []
    for table in tables:
        if not table.primary_key.columns:
            raise TransferFailed(f"table {table.name} has no primary key: it cannot be read in a stable order")
        columns = tuple(ColumnPlan(c.name, _kind(table, c), bool(c.nullable)) for c in table.columns)
        names = [c.name for c in table.columns]
        plans.append(TablePlan(table.name, columns, tuple(names.index(c.name) for c in table.primary_key.columns)))
    return plans


def _kind(table: Table, column: Column) -> Kind:
    type_ = column.type
    if isinstance(type_, Boolean):
        return "bool"
    if isinstance(type_, Integer):
        return "int"
    if isinstance(type_, String):
        return "text"
    if isinstance(type_, DateTime):
        return "timestamptz" if type_.timezone else "timestamp"
    raise TransferFailed(f"column {table.name}.{column.name} has type {type_}, which the transfer cannot copy yet")


def quote(name: str) -> str:
    """An identifier as both SQLite and PostgreSQL read it."""
    return '"' + name.replace('"', '""') + '"'
