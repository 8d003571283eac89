"""The checksum: the same bytes on every side, whichever database wrote them."""

import datetime
import sqlite3

import asyncpg
import pytest

from conftest import AWKWARD_NAMES, make_source, run_async
from server.models import metadata
from server.transfer.plan import MICROSECOND, PG_EPOCH, make_plans
from server.transfer.postgres import checksum_query, table_check
from server.transfer.sqlite import TIMESTAMP_TEXT
from server.transfer.verify import ColumnDigests, TableCheck, canonical_column, canonical_text


@pytest.mark.postgres
def test_both_sides_of_the_checksum_write_the_same_text(postgres_url):
    """The source's column text, and PostgreSQL's own COPY text split into columns (rows cut anywhere)."""
    names = list(AWKWARD_NAMES)
    moments = [None if i % 3 else (i * 1_000_003,) for i in range(len(names))]

    text = copy_text(
        postgres_url,
        "t (i int, n text, m bigint, b bool)",
        "INSERT INTO t VALUES ($1, $2, $3, $4)",
        [(i, n, m and m[0], i % 2 == 0) for i, (n, m) in enumerate(zip(names, moments, strict=True))],
        "SELECT i, n, m, b FROM t ORDER BY i",
    )
    target = digests_in_pieces(text, 4)
    source = ColumnDigests(4)
    source.add_columns(
        [
            canonical_column("int", list(range(len(names))), False),
            canonical_column("text", names, False),
            canonical_column("timestamptz", [m and m[0] for m in moments], True),
            canonical_column("bool", [i % 2 == 0 for i in range(len(names))], False),
        ],
        len(names),
    )
    assert (source.rows, source.check()) == (target.rows, target.check())
    assert source.rows == len(names)


@pytest.mark.postgres
@pytest.mark.parametrize("with_nulls", [False, True])
def test_timestamps_read_back_in_their_binary_form_hash_as_microseconds(postgres_url, with_nulls):
    """The target reads timestamps back as timestamptz_send/timestamp_send (bytea in COPY text): the digest
    is the one of their microseconds since 2000, at the edges of the range, before 2000 and with NULLs."""
    moments = [
        datetime.datetime(1, 1, 1, tzinfo=datetime.UTC),
        datetime.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=datetime.UTC),
        datetime.datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=datetime.UTC),
        PG_EPOCH,
        datetime.datetime(2026, 11, 30, 22, 53, 0, 1, tzinfo=datetime.UTC),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=datetime.UTC),
    ]
    values = [None if with_nulls and i % 2 else m for i, m in enumerate(moments * 50)]

    text = copy_text(
        postgres_url,
        "t (i int, aware timestamptz, naive timestamp)",
        # As text: asyncpg's own codec sends datetime.min and .max as -infinity and infinity.
        "INSERT INTO t VALUES ($1, $2::text::timestamptz, $2::text::timestamptz AT TIME ZONE 'UTC')",
        [(i, m and m.isoformat()) for i, m in enumerate(values)],
        "SELECT timestamptz_send(aware), timestamp_send(naive) FROM t ORDER BY i",
    )
    target = digests_in_pieces(text, 2, sent=frozenset({0, 1}))
    micros = [None if m is None else (m - PG_EPOCH) // MICROSECOND for m in values]
    source = ColumnDigests(2)
    column = canonical_column("timestamptz", micros, with_nulls)
    source.add_columns([column, column], len(values))
    assert (source.rows, source.check()) == (target.rows, target.check())
    assert min(m for m in micros if m is not None) < 0 < max(m for m in micros if m is not None)  # both signs


@pytest.mark.postgres
def test_postgres_own_check_sees_one_microsecond_and_a_swap_but_not_the_order_of_insertion(postgres_url):
    """Between two PostgreSQL databases each side runs checksum_query where the rows lie: any one value
    changed (a timestamp by a microsecond, at the edges too) or two values swapped between rows changes it."""
    make_source(postgres_url)
    query = checksum_query(make_plans(metadata.sorted_tables)[0])
    rows = [
        (1, "a", "0001-01-01 00:00:00+00"),
        (2, "b", "2026-11-30 23:00:00.000001+00"),
        (3, "c", "9999-12-31 23:59:59.999999+00"),
    ]

    async def figure(rows) -> TableCheck:
        connection = await asyncpg.connect(postgres_url, timeout=10)
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.executemany("INSERT INTO my_table VALUES ($1, $2, $3::text::timestamptz)", rows)
            return table_check(await connection.fetch(query))
        finally:
            await transaction.rollback()
            await connection.close()

    def changed(index: int, moment: str) -> list[tuple]:
        return [(i, n, moment if i == index else m) for i, n, m in rows]

    original = run_async(figure, rows)
    assert original.rows == 3
    assert run_async(figure, list(reversed(rows))) == original
    assert run_async(figure, changed(2, "2026-11-30 23:00:00.000002+00")) != original
    assert run_async(figure, changed(1, "0001-01-01 00:00:00.000001+00")) != original
    assert run_async(figure, changed(3, "9999-12-31 23:59:59.999998+00")) != original
    assert run_async(figure, [(1, "b", rows[0][2]), (2, "a", rows[1][2]), rows[2]]) != original


def test_sqlite_writes_a_timestamp_as_sqlalchemy_does_at_the_edges():
    """Microseconds since 2000 turned into SQLite text in SQL: the moments the transfer must not move."""
    moments = ["0001-01-01 00:00:00.000000", "1969-12-31 23:59:59.999999", "1999-12-31 23:59:59.999999"]
    moments += ["2000-01-01 00:00:00.000000", "2026-11-21 00:22:53.000001", "9999-12-31 23:59:59.999999"]
    connection = sqlite3.connect(":memory:")
    try:
        for text in moments:
            moment = datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC)
            microseconds = (moment - PG_EPOCH) // MICROSECOND
            written = connection.execute(f"SELECT {TIMESTAMP_TEXT.format(v='?1')}", (microseconds,)).fetchone()[0]
            assert written == text
        assert connection.execute(f"SELECT {TIMESTAMP_TEXT.format(v='?1')}", (None,)).fetchone()[0] is None
    finally:
        connection.close()


def test_a_column_with_nulls_and_one_without_hash_alike_when_they_hold_the_same():
    with_nulls, without = ColumnDigests(1), ColumnDigests(1)
    with_nulls.add_values(["text"], [("a",), ("b\tc",)])
    without.add_columns([canonical_column("text", ["a", "b\tc"], False)], 2)
    assert with_nulls.check() == without.check()
    assert with_nulls.check() != TableCheck(2, ColumnDigests(1).check().checksum)


@pytest.mark.parametrize("separator", ["\x1f", "\x00"])
def test_text_escaped_as_bytes_is_the_text_escaped_as_str(separator):
    """An SQLite source hashes text as the UTF-8 bytes SQLite gives, joined by either separator it reads
    with: the same bytes canonical_column writes from the values."""
    names = [name for name in AWKWARD_NAMES if separator not in name]
    names += ["tab\tnewline\nreturn\rback\\slash\x08\x0b\x0c", "", "日本\\n語"]
    joined = separator.join(names).encode()
    assert canonical_text(joined, separator.encode()) == canonical_column("text", names, False)


def copy_text(postgres_url: str, table: str, insert: str, rows: list[tuple], query: str) -> bytes:
    """PostgreSQL's COPY text of `query` over a temporary table filled with `rows`."""

    async def run() -> bytes:
        connection = await asyncpg.connect(postgres_url, timeout=10)
        try:
            await connection.execute(f"CREATE TEMP TABLE {table}")
            await connection.executemany(insert, rows)
            pieces = []

            async def take(data):
                pieces.append(data)

            await connection.copy_from_query(query, output=take)
            return b"".join(pieces)
        finally:
            await connection.close()

    return run_async(run)


def digests_in_pieces(text: bytes, width: int, sent: frozenset[int] = frozenset()) -> ColumnDigests:
    """COPY text hashed as it streams in, cut every 7 bytes: rows and values split anywhere."""
    digests = ColumnDigests(width)
    for start in range(0, len(text), 7):
        digests.add_copy_text(text[start : start + 7], sent)
    return digests
