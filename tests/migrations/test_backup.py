"""Snapshots before upgrading: taken on every upgrade path, named, checked, rotated, consistent under writes,
refusing the upgrade when they fail; and a destructive upgrade undone by restoring one."""

import contextlib
import re
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import (
    assert_clean,
    assert_one_clear_error,
    column_names,
    in_thread,
    is_sqlite,
    json_of,
    make_settings,
    query,
    run_alembic,
    run_backup,
    sqlite_path,
    table_names,
    upgrade_in_process,
    versions,
)
from server.migrations import Migrator
from server.migrations.backup import list_snapshots, take_snapshot

ADD_NOTE = """
    op.add_column("my_table", sa.Column("note", sa.String(60), nullable=True))
    op.execute("UPDATE my_table SET note = 'kept ' || name")
"""
DROP_NOTE = """
    with op.batch_alter_table("my_table") as batch_op:
        batch_op.drop_column("note")
"""
ACCEPT_DROP = 'lint_ignore = {"ban-drop-column": "test: the data is in the snapshot"}'
NAMES = ("ann", "bob", "zoë")


def snapshot_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.d*")) if directory.is_dir() else []


def default_backup_dir(url: str, cwd: Path) -> Path:
    """Where snapshots go without BACKUP_DIR: beside the SQLite file, or var/backups under the working directory."""
    return sqlite_path(url).parent / "backups" if is_sqlite(url) else cwd / "var" / "backups"


def contract_name(url: str, revision: str) -> re.Pattern:
    name, extension = ("app", "db") if is_sqlite(url) else (url.rsplit("/", 1)[1], "dump")
    return re.compile(rf"{re.escape(name)}-{revision}-\d{{8}}T\d{{6}}Z\.{extension}")


def insert_names(url: str) -> None:
    query(url, "INSERT INTO my_table (name) VALUES " + ", ".join(f"('{name}')" for name in NAMES))


@pytest.mark.parametrize("how", ["server", "alembic"])
def test_a_destructive_upgrade_is_undone_by_restoring_its_snapshot(
    request, database_url, how, extra_revisions, start_server, tmp_path
):
    if not is_sqlite(database_url):
        request.getfixturevalue("pg_dump_tools")
    ini, add = extra_revisions
    environ = dict(DATABASE_URL=database_url, BACKUP="always", ADMIN_TOKEN="secret-token")
    backups = default_backup_dir(database_url, tmp_path)

    def upgrade() -> None:
        if how == "alembic":
            done = run_alembic("upgrade", "head", cwd=tmp_path, ALEMBIC_CONFIG=str(ini), **environ)
            assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        else:
            server = start_server("--migrate=only", ALEMBIC_CONFIG=str(ini), **environ)
            assert server.wait_exit(60) == 0, server.log
            assert_clean(server.log)

    # The release at 0002 creates the database and takes rows: a new database has nothing to snapshot.
    first = start_server("--migrate=only", **environ)
    assert first.wait_exit(60) == 0, first.log
    insert_names(database_url)
    assert snapshot_files(backups) == []

    add("0003", "0002", ADD_NOTE, downgrade=DROP_NOTE)
    upgrade()
    assert [p.name for p in snapshot_files(backups) if contract_name(database_url, "0002").fullmatch(p.name)]
    notes = sorted(query(database_url, "SELECT name, note FROM my_table"))
    assert notes == sorted((name, f"kept {name}") for name in NAMES)

    # 0004 drops the column holding data; the snapshot before it is the way back.
    add("0004", "0003", DROP_NOTE, imports=ACCEPT_DROP)
    if how == "server":
        server = start_server(ALEMBIC_CONFIG=str(ini), **environ)
        server.wait_ready(60)
        body = json_of(server.request("GET", "/admin/migrations", headers={"Authorization": "Bearer secret-token"}))
        assert body["current"] == ["0004"] and body["last_snapshot"]["revision"] == "0003", body
        assert server.stop() == 0, server.log
        assert_clean(server.log)
        assert re.search(r"snapshot of \S+ at 0003: \S+ \(\d+(\.\d)? [KM]?B.* in \d+\.\d\d s", server.log), server.log
    else:
        upgrade()
    assert versions(database_url) == ["0004"] and "note" not in column_names(database_url, "my_table")
    [snapshot] = [p for p in snapshot_files(backups) if contract_name(database_url, "0003").fullmatch(p.name)]
    if how == "server":
        assert body["last_snapshot"]["path"] == str(snapshot) and body["last_snapshot"]["size"] > 0, body

    done = run_backup("restore", str(snapshot), cwd=tmp_path, DATABASE_URL=database_url)
    assert done.returncode == 0, done.stderr
    assert "now at revision 0003" in done.stdout, done.stdout
    assert versions(database_url) == ["0003"]
    assert sorted(query(database_url, "SELECT name, note FROM my_table")) == notes

    # The release that matches the snapshot (no 0004) serves the restored rows again.
    (ini.parent / "extra_versions" / "0004.py").unlink()
    server = start_server(ALEMBIC_CONFIG=str(ini), **environ)
    server.wait_ready(60)
    items = json_of(server.get("/"))["items"]
    assert sorted(item["name"] for item in items) == sorted(NAMES)
    assert server.stop() == 0, server.log
    assert_clean(server.log)
    assert versions(database_url) == ["0003"]


def seed_rows(url: str, count: int) -> None:
    with contextlib.closing(sqlite3.connect(sqlite_path(url))) as connection:
        connection.executemany("INSERT INTO my_table (name) VALUES (?)", ((f"seed {i}",) for i in range(count)))
        connection.commit()


def count_in(path: Path) -> tuple[int, list[str], str]:
    """(rows of my_table, integrity_check, journal mode) of a snapshot file."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        rows = connection.execute("SELECT count(*) FROM my_table").fetchone()[0]
        integrity = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
    return rows, integrity, journal


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_a_snapshot_is_consistent_while_8_clients_write(sqlite_url, journal, start_server):
    upgrade_in_process(sqlite_url)
    query(sqlite_url, f"PRAGMA journal_mode = {journal}")
    seed_rows(sqlite_url, 100_000)
    server = start_server(DATABASE_URL=sqlite_url)
    server.wait_ready(30)

    stop, posted, failures = threading.Event(), [0] * 8, []
    deadline = time.monotonic() + 60

    def client(index: int) -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            status, body, _ = server.request("POST", "/", body=b'{"name": "written during"}', timeout=30)
            if status != 201:
                failures.append((status, body))
                return
            posted[index] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    try:
        while sum(posted) < 50 and time.monotonic() < deadline and not failures:
            time.sleep(0.01)
        settings = make_settings(sqlite_url)
        taken, written_during = [], 0
        for _ in range(3):
            before = sum(posted)
            taken.append(take_snapshot(settings, "0002"))
            written_during += sum(posted) - before
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not failures, failures
    assert written_during > 0, "no client wrote while the snapshots were taken: the test proves nothing"
    total = query(sqlite_url, "SELECT count(*) FROM my_table")[0][0]
    for snapshot in taken:
        rows, integrity, mode = count_in(snapshot.path)
        # The count taken inside the snapshot's own read transaction is the count the snapshot holds.
        assert rows == snapshot.rows["my_table"], snapshot
        assert 100_000 < rows < total
        assert integrity == ["ok"] and mode == "delete"
        assert not Path(f"{snapshot.path}-wal").exists()
    assert server.stop() == 0, server.log
    assert_clean(server.log)


def test_rotation_keeps_exactly_backup_keep_and_names_stay_unique_within_a_second(sqlite_url, extra_revisions):
    ini, add = extra_revisions
    flags = (f"--alembic-config={ini}", "--backup-keep=2")
    upgrade_in_process(sqlite_url)
    insert_names(sqlite_url)
    backups = default_backup_dir(sqlite_url, Path.cwd())
    backups.mkdir()
    crashed = backups / "app-0001-20260101T000000Z.db.partial"  # a snapshot a killed migrator left half-written
    crashed.write_bytes(b"half")
    for number in range(3, 7):
        add(f"000{number}", f"000{number - 1}", f"op.execute(\"INSERT INTO my_table (name) VALUES ('r{number}')\")")
        migrator = Migrator(make_settings(sqlite_url, *flags))
        in_thread(migrator.upgrade)
        assert migrator.last_snapshot.revision == f"000{number - 1}"
    # Four snapshots taken (before 0003 … 0006), the newest two kept; the partial one is gone.
    assert [p.name.split("-")[1] for p in snapshot_files(backups)] == ["0004", "0005"]

    settings = make_settings(sqlite_url, *flags, "--backup-keep=5")
    taken = [take_snapshot(settings, "0006").path for _ in range(3)]
    assert len(set(taken)) == 3
    assert [s.path for s in list_snapshots(settings)][:3] == taken[::-1]


def test_no_snapshot_for_a_new_database_nothing_pending_or_backup_off(database_url, extra_revisions, tmp_path):
    ini, add = extra_revisions
    environ_flags = ("--backup=always", f"--backup-dir={tmp_path / 'backups'}", f"--alembic-config={ini}")
    migrator = Migrator(make_settings(database_url, *environ_flags))
    in_thread(migrator.upgrade)  # new: nothing to lose
    in_thread(migrator.upgrade)  # at head: nothing pending
    add("0003", "0002", ADD_NOTE)
    off = Migrator(make_settings(database_url, *environ_flags, "--backup=off"))
    in_thread(off.upgrade)
    assert versions(database_url) == ["0003"]
    assert snapshot_files(tmp_path / "backups") == []
    assert migrator.last_snapshot is None and off.last_snapshot is None


def test_auto_takes_no_postgres_snapshot(postgres_url, extra_revisions, tmp_path):
    ini, add = extra_revisions
    upgrade_in_process(postgres_url)
    add("0003", "0002", ADD_NOTE)
    in_thread(Migrator(make_settings(postgres_url, f"--alembic-config={ini}", f"--backup-dir={tmp_path}")).upgrade)
    assert versions(postgres_url) == ["0003"] and snapshot_files(tmp_path) == []


@pytest.mark.parametrize("how", ["server", "alembic"])
def test_an_unwritable_backup_directory_stops_the_upgrade_and_changes_nothing(
    sqlite_url, how, extra_revisions, start_server, tmp_path
):
    ini, add = extra_revisions
    upgrade_in_process(sqlite_url)
    insert_names(sqlite_url)
    add("0003", "0002", ADD_NOTE)
    # Root ignores permission bits: a directory under a regular file cannot be made, even by root.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    environ = dict(DATABASE_URL=sqlite_url, ALEMBIC_CONFIG=str(ini), BACKUP_DIR=str(blocker / "backups"))

    if how == "server":
        server = start_server(**environ)
        assert server.wait_exit(60) == 1, server.log
        line = assert_one_clear_error(server, "snapshot", "--backup=off", str(blocker))
        assert "nothing was migrated" in line
    else:
        done = run_alembic("upgrade", "head", cwd=tmp_path, **environ)
        assert done.returncode != 0 and "--backup=off" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
    assert versions(sqlite_url) == ["0002"]
    assert "note" not in column_names(sqlite_url, "my_table")
    assert len(query(sqlite_url, "SELECT * FROM my_table")) == len(NAMES)
    assert not list(tmp_path.rglob("*.partial"))


def test_backup_always_without_pg_dump_stops_the_upgrade_naming_it(postgres_url, extra_revisions, start_server):
    ini, add = extra_revisions
    upgrade_in_process(postgres_url)
    add("0003", "0002", ADD_NOTE)
    # Only the virtual environment's bin on PATH: the server runs, pg_dump is nowhere.
    server = start_server(
        DATABASE_URL=postgres_url, ALEMBIC_CONFIG=str(ini), BACKUP="always", PATH=str(Path(sys.executable).parent)
    )
    assert server.wait_exit(60) == 1, server.log
    assert_one_clear_error(server, "pg_dump", "--backup=off")
    assert versions(postgres_url) == ["0002"]


def test_a_postgres_restore_drops_what_later_revisions_made(postgres_url, pg_dump_tools, extra_revisions, tmp_path):
    """pg_restore --clean drops only what the dump holds: a table, a sequence and an enum type made after the
    snapshot would stay behind and make the next upgrade fail. The restore removes them in the same step."""
    ini, add = extra_revisions
    upgrade_in_process(postgres_url)
    insert_names(postgres_url)
    add(
        "0003",
        "0002",
        "op.execute(\"CREATE TYPE mood AS ENUM ('ok', 'sad')\")\n"
        'op.create_table("later", sa.Column("id", sa.Integer, primary_key=True), sa.Column("m", sa.Text))',
    )
    settings = make_settings(postgres_url, f"--alembic-config={ini}", f"--backup-dir={tmp_path}", "--backup=always")
    in_thread(Migrator(settings).upgrade)
    assert "later" in table_names(postgres_url)
    [snapshot] = snapshot_files(tmp_path)

    done = run_backup("restore", str(snapshot), cwd=tmp_path, DATABASE_URL=postgres_url)
    assert done.returncode == 0, done.stderr
    assert versions(postgres_url) == ["0002"]
    assert table_names(postgres_url) == {"alembic_version", "my_table"}
    assert query(postgres_url, "SELECT count(*) FROM pg_type WHERE typname = 'mood'") == [(0,)]
    assert sorted(name for (name,) in query(postgres_url, "SELECT name FROM my_table")) == sorted(NAMES)
    # And the release that has 0003 upgrades again from there.
    in_thread(Migrator(settings).upgrade)
    assert versions(postgres_url) == ["0003"]
