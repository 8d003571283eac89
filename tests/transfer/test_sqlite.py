"""SQLite as a target: one BEGIN IMMEDIATE transaction, rows refused or replaced, text as SQLAlchemy writes it."""

import contextlib
import sqlite3

from sqlalchemy.engine import make_url

from conftest import assert_one_clear_error, make_source, stored_rows, transfer


def raw_rows(url: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(make_url(url).database)) as connection:
        return connection.execute("SELECT id, name, created_at FROM my_table ORDER BY id").fetchall()


def test_a_sqlite_target_that_holds_rows_is_refused_and_left_as_it_was(sqlite_url, tmp_path):
    target = f"sqlite:///{tmp_path / 'target' / 'app.db'}"
    make_source(sqlite_url, [(1, "new", "2026-01-01 00:00:00")])
    make_source(target, [(5, "kept", "2026-01-02 00:00:00")])

    result = transfer(sqlite_url, target)

    assert result.returncode == 1
    assert_one_clear_error(result.stderr, "my_table already holds rows", "--replace")
    assert raw_rows(target) == [(5, "kept", "2026-01-02 00:00:00")]


def test_replace_empties_a_sqlite_target_in_the_same_transaction(sqlite_url, tmp_path):
    target = f"sqlite:///{tmp_path / 'target' / 'app.db'}"
    make_source(sqlite_url, [(7, "new", "2026-01-01 00:00:00")])
    make_source(target, [(9, "old", "2026-01-02 00:00:00")])

    result = transfer(sqlite_url, target, "--replace")

    assert result.returncode == 0, result.stderr
    assert stored_rows(target) == stored_rows(sqlite_url)


def test_a_sqlite_target_holds_timestamps_as_sqlalchemy_writes_them(sqlite_url, tmp_path):
    # UTC, microseconds always: what the server writes, whatever form the source held.
    target = f"sqlite:///{tmp_path / 'target' / 'app.db'}"
    make_source(sqlite_url, [(1, "a", "2026-11-21T02:22:53+02:00"), (2, "b", "2026-11-21"), (3, "c", "0001-01-01")])

    result = transfer(sqlite_url, target)

    assert result.returncode == 0, result.stderr
    assert [text for _, _, text in raw_rows(target)] == [
        "2026-11-21 00:22:53.000000",
        "2026-11-21 00:00:00.000000",
        "0001-01-01 00:00:00.000000",
    ]
