"""`python -m server.backup list | restore FILE`: what it prints, and how it refuses, as a user runs it."""

import contextlib
import re
import shutil
import sqlite3

from conftest import make_settings, migration_lock_held, query, run_backup, upgrade_in_process, versions
from server.migrations.backup import take_snapshot


def test_list_prints_this_databases_snapshots_newest_first(sqlite_url, tmp_path):
    upgrade_in_process(sqlite_url)
    settings = make_settings(sqlite_url)
    taken = [take_snapshot(settings, "0002").path for _ in range(2)]
    # Another database's snapshot in the same directory is not listed.
    shutil.copy(taken[0], taken[0].with_name(taken[0].name.replace("app-", "other-")))

    done = run_backup("list", "--database-url", sqlite_url, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("snapshots of app in "), done.stdout
    assert [line.split()[0] for line in lines[1:]] == [str(path) for path in reversed(taken)]
    for line in lines[1:]:
        assert re.search(r"revision 0002  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  \d+\.\d KB$", line), line


def test_list_without_snapshots_says_so(sqlite_url, tmp_path):
    done = run_backup("list", cwd=tmp_path, DATABASE_URL=sqlite_url)
    assert done.returncode == 0 and done.stdout.startswith("no snapshots of app in "), (done.stdout, done.stderr)


def one_error_line(done) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_restore_refuses_a_missing_damaged_or_foreign_file_and_changes_nothing(sqlite_url, tmp_path):
    upgrade_in_process(sqlite_url)
    query(sqlite_url, "INSERT INTO my_table (name) VALUES ('kept')")
    snapshot = take_snapshot(make_settings(sqlite_url), "0002").path
    damaged = tmp_path / "damaged.db"
    data = bytearray(snapshot.read_bytes())
    data[4096:8192] = b"\xff" * 4096  # the table's page
    damaged.write_bytes(bytes(data))
    foreign = tmp_path / "foreign.db"
    with contextlib.closing(sqlite3.connect(foreign)) as connection:
        connection.execute("CREATE TABLE t (x)")

    wrong_kind = tmp_path / "app-0002-20260101T000000Z.dump"
    wrong_kind.write_bytes(b"x")
    cases = {
        tmp_path / "missing.db": "no snapshot file",
        damaged: "damaged.db",
        foreign: "holds no alembic_version",
        wrong_kind: "expected a .db file",
    }
    for path, words in cases.items():
        line = one_error_line(run_backup("restore", str(path), cwd=tmp_path, DATABASE_URL=sqlite_url))
        assert words in line, line
    assert versions(sqlite_url) == ["0002"]
    assert query(sqlite_url, "SELECT name FROM my_table") == [("kept",)]


def test_restore_waits_for_the_migration_lock(sqlite_url, tmp_path):
    upgrade_in_process(sqlite_url)
    snapshot = take_snapshot(make_settings(sqlite_url), "0002").path
    query(sqlite_url, "INSERT INTO my_table (name) VALUES ('after the snapshot')")

    with migration_lock_held(sqlite_url):
        done = run_backup("restore", str(snapshot), cwd=tmp_path, DATABASE_URL=sqlite_url, MIGRATION_LOCK_TIMEOUT="1")
    assert "migration lock" in one_error_line(done)
    assert query(sqlite_url, "SELECT name FROM my_table") == [("after the snapshot",)]

    done = run_backup("restore", str(snapshot), cwd=tmp_path, DATABASE_URL=sqlite_url)
    assert done.returncode == 0 and "now at revision 0002" in done.stdout, (done.stdout, done.stderr)
    assert query(sqlite_url, "SELECT name FROM my_table") == []


def test_usage_errors_exit_1_with_one_line(tmp_path):
    for args in ([], ["restore"], ["list", "extra"], ["frobnicate"], ["restore", "x.db", "--no-such-flag"]):
        one_error_line(run_backup(*args, cwd=tmp_path))
