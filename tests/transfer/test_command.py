"""The command: `python -m server.transfer` as a user runs it, from real SQLite files into fresh PostgreSQL
databases, interrupted for real (SIGKILL, SIGINT, SIGTERM), and the server serving what it copied. The other
directions, held to the same guarantees, are in test_directions.py."""

import contextlib
import datetime
import fcntl
import os
import pty
import re
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time

import orjson
import pytest
from sqlalchemy.engine import make_url

from conftest import (
    AWKWARD_MOMENTS,
    AWKWARD_NAMES,
    assert_one_clear_error,
    clean_environ,
    error_lines,
    in_thread,
    make_settings,
    make_source,
    pg_execute,
    query,
    start_transfer,
    stored_rows,
    transfer,
    wait_for,
)
from server.migrations import Migrator
from server.settings import ROOT

HEAD = "0002"
UTC = datetime.UTC


def target_rows(url: str) -> list[tuple]:
    return query(url, "SELECT id, name, created_at FROM my_table ORDER BY id")


def next_id(url: str) -> int:
    return query(url, "SELECT nextval(pg_get_serial_sequence('my_table', 'id'))")[0][0]


def stall_at(url: str, row_id: int, seconds: float) -> None:
    """A trigger on the target that holds the COPY inside its transaction when row_id arrives."""
    pg_execute(
        url,
        f"""
        CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.id = {row_id} THEN PERFORM pg_sleep({seconds}); END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER stall BEFORE INSERT ON my_table FOR EACH ROW EXECUTE FUNCTION stall();
        """,
    )


def transfer_backends(url: str) -> int:
    rows = query(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE 'server.transfer%'",
    )
    return rows[0][0]


def transfer_is_stalled(url: str) -> bool:
    rows = query(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE 'server.transfer%' AND wait_event = 'PgSleep'",
    )
    return rows[0][0] == 1


# --- a transfer that works ---------------------------------------------------------------------------


@pytest.mark.postgres
def test_an_empty_source_gives_an_empty_target_at_head(sqlite_url, postgres_url):
    make_source(sqlite_url)
    result = transfer(sqlite_url, postgres_url)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^my_table\s+0\s+0\s+\w+\s+\w+\s+match$", result.stdout, re.MULTILINE), result.stdout
    assert query(postgres_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert target_rows(postgres_url) == []
    assert next_id(postgres_url) == 1
    assert not error_lines(result.stderr)


@pytest.mark.postgres
def test_thousands_of_awkward_rows_arrive_exactly_and_the_next_id_follows(sqlite_url, postgres_url):
    rows, expected = [], []
    for i in range(1, 5001):
        name = f"{AWKWARD_NAMES[i % len(AWKWARD_NAMES)]}"[:50]
        text, moment = AWKWARD_MOMENTS[i % len(AWKWARD_MOMENTS)]
        rows.append((i * 3, name, text))  # ids with gaps: the next id follows the highest, not the count
        expected.append((i * 3, name, moment))
    make_source(sqlite_url, rows)

    result = transfer(sqlite_url, postgres_url, "--batch-size=700")  # chunks that do not divide the rows

    assert result.returncode == 0, result.stderr
    assert re.search(r"^my_table\s+5,000\s+5,000\s+(\w+)\s+\1\s+match$", result.stdout, re.MULTILINE), result.stdout
    assert target_rows(postgres_url) == expected
    assert next_id(postgres_url) == 15001
    assert "my_table: copying 5,000 rows" in result.stderr  # progress as log lines: stderr is no terminal
    assert re.search(r"my_table: copied and checked 5,000 rows in [\d.]+ s \([\d,]+ rows/s\)", result.stderr)
    assert re.search(r"committed: 1 table\(s\), 5,000 rows in [\d.]+ s \([\d,]+ rows/s", result.stderr)
    assert not error_lines(result.stderr) and "Traceback" not in result.stderr


@pytest.mark.postgres
def test_the_server_serves_the_same_rows_after_the_transfer_and_a_post_gets_the_next_id(
    start_server, tmp_path, sqlite_url, postgres_url
):
    rows = [
        (i, f"{AWKWARD_NAMES[i % len(AWKWARD_NAMES)]} {i}"[:50] or "x", AWKWARD_MOMENTS[i % 4][0])
        for i in range(1, 2501)
    ]
    make_source(sqlite_url, rows)

    def pages(server) -> list[dict]:
        server.wait_ready()
        items, after = [], 0
        while True:
            status, body, _ = server.get(f"/?limit=1000&after={after}")
            assert status == 200, body
            page = orjson.loads(body)
            items += page["items"]
            if page["next"] is None:
                return items
            after = page["next"]

    before = pages(start_server(DATABASE_URL=sqlite_url, cwd=tmp_path / "source"))
    assert len(before) == 2500

    result = transfer(sqlite_url, postgres_url)
    assert result.returncode == 0, result.stderr

    served = start_server(DATABASE_URL=postgres_url, cwd=tmp_path / "target")
    assert pages(served) == before
    status, body, _ = served.request("POST", "/", orjson.dumps({"name": "after the transfer"}))
    assert status == 201, body
    assert orjson.loads(body)["id"] == 2501


@pytest.mark.postgres
def test_progress_is_a_bar_with_the_rate_when_stderr_is_a_terminal(sqlite_url, postgres_url):
    make_source(sqlite_url, ((i, f"row {i}", "2026-01-01 00:00:00") for i in range(1, 20001)))
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 wide
    process = subprocess.Popen(
        [sys.executable, "-m", "server.transfer", sqlite_url, postgres_url],
        cwd=ROOT,
        env=clean_environ(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 0.1)[0]:
                try:
                    data = os.read(controller, 65536)
                except OSError:  # the other end closed: the process is done with its terminal
                    break
                if not data:
                    break
                seen += data
            elif process.poll() is not None:
                break
        assert process.wait(30) == 0, seen.decode(errors="replace")
    finally:
        os.close(controller)
        process.kill()
        process.wait(10)
        process.stdout.close()
    text = seen.decode(errors="replace")
    assert re.search(r"my_table: 100%\|.*\| 20\.0k/20\.0k \[.* rows/s\]", text), text
    assert "copying 20,000 rows" not in text  # the bar instead of the log lines


# --- a target that already holds rows ---------------------------------------------------------------


def _target_with_rows(url: str) -> list[tuple]:
    in_thread(Migrator(make_settings(url)).upgrade)
    pg_execute(url, "INSERT INTO my_table (name) VALUES ('kept 1'), ('kept 2')")
    return target_rows(url)


@pytest.mark.postgres
def test_a_target_that_holds_rows_is_refused_and_left_as_it_was(sqlite_url, postgres_url):
    make_source(sqlite_url, [(1, "new", "2026-01-01 00:00:00")])
    before = _target_with_rows(postgres_url)

    result = transfer(sqlite_url, postgres_url)

    assert result.returncode == 1
    assert_one_clear_error(result.stderr, "my_table already holds rows", "--replace")
    assert target_rows(postgres_url) == before
    assert next_id(postgres_url) == 3


@pytest.mark.postgres
def test_replace_empties_the_target_in_the_same_transaction(sqlite_url, postgres_url):
    make_source(sqlite_url, [(7, "new", "2026-01-01 00:00:00")])
    _target_with_rows(postgres_url)

    result = transfer(sqlite_url, postgres_url, "--replace")

    assert result.returncode == 0, result.stderr
    assert target_rows(postgres_url) == [(7, "new", datetime.datetime(2026, 1, 1, tzinfo=UTC))]
    assert next_id(postgres_url) == 8


@pytest.mark.postgres
def test_replace_that_fails_brings_the_old_rows_back(sqlite_url, postgres_url):
    # SQLite does not enforce VARCHAR(50); PostgreSQL refuses the row in the middle of the COPY.
    make_source(sqlite_url, [(i, "y" * (51 if i == 3000 else 5), "2026-01-01 00:00:00") for i in range(1, 5001)])
    before = _target_with_rows(postgres_url)

    result = transfer(sqlite_url, postgres_url, "--replace")

    assert result.returncode == 1
    assert_one_clear_error(result.stderr, "value too long", "rolled back")
    assert target_rows(postgres_url) == before
    assert next_id(postgres_url) == 3


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_source_behind_head_is_refused_and_nothing_is_written(sqlite_url, postgres_url):
    make_source(sqlite_url, [(1, "old")], revision="0001")

    result = transfer(sqlite_url, postgres_url)

    assert result.returncode == 1
    assert_one_clear_error(result.stderr, "source is at 0001", "upgrade it first")
    assert query(postgres_url, "SELECT to_regclass('alembic_version'), to_regclass('my_table')") == [(None, None)]


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("not a date", "holds 'not a date', which is not a timestamp"),
        ("a\x00b", "my_table.name of the row with key 50 holds a NUL character"),
    ],
    ids=["timestamp", "nul"],
)
def test_a_value_that_cannot_be_copied_stops_with_one_line_and_nothing_written(sqlite_url, postgres_url, bad, message):
    column = "created_at" if "date" in bad else "name"
    rows = [(i, "n", "2026-01-01 00:00:00") for i in range(1, 101)]
    make_source(sqlite_url, rows)
    with contextlib.closing(sqlite3.connect(make_url(sqlite_url).database)) as connection, connection:
        connection.execute(f"UPDATE my_table SET {column} = ? WHERE id = 50", (bad,))

    result = transfer(sqlite_url, postgres_url)

    assert result.returncode == 1
    assert_one_clear_error(result.stderr, message)
    assert target_rows(postgres_url) == []


def test_text_that_is_not_utf8_is_named_with_its_row_and_nothing_is_written(sqlite_url, tmp_path):
    # SQLite keeps TEXT as it was given; this is what a program writing Latin-1 bytes into it leaves behind.
    rows = [(i, "n", "2026-01-01 00:00:00") for i in range(1, 101)]
    make_source(sqlite_url, rows)
    with contextlib.closing(sqlite3.connect(make_url(sqlite_url).database)) as connection, connection:
        connection.execute("UPDATE my_table SET name = CAST(x'4bf66c6e' AS TEXT) WHERE id = 70")  # 'Köln' in Latin-1
    target = f"sqlite:///{tmp_path / 'target.db'}"

    result = transfer(sqlite_url, target)

    assert result.returncode == 1
    assert_one_clear_error(result.stderr, "source: my_table.name of the row with key 70 holds text that is not UTF-8")
    assert stored_rows(target) == []


@pytest.mark.postgres
def test_the_same_database_twice_is_refused(sqlite_url, postgres_url, tmp_path):
    make_source(sqlite_url, [(1, "a", "2026-01-01 00:00:00")])
    relative = f"sqlite:///{os.path.relpath(make_url(sqlite_url).database, ROOT)}"
    other_form = postgres_url.replace("postgresql://", "postgres://")
    for source, target in ((sqlite_url, relative), (postgres_url, other_form)):
        result = transfer(source, target)
        assert result.returncode == 1
        assert_one_clear_error(result.stderr, "source and target are the same database")
    assert query(postgres_url, "SELECT to_regclass('alembic_version')") == [(None,)]


@pytest.mark.postgres
def test_every_pair_is_accepted_now_and_a_database_without_a_module_is_refused(sqlite_url, postgres_url, tmp_path):
    # These pairs were refused while only SQLite -> PostgreSQL existed; tests/transfer/test_directions.py
    # holds each of them to the same guarantees.
    make_source(sqlite_url, [(1, "a", "2026-01-01 00:00:00")])
    other_sqlite = f"sqlite:///{tmp_path / 'other.db'}"
    for source, target in ((sqlite_url, other_sqlite), (sqlite_url, postgres_url), (postgres_url, other_sqlite)):
        result = transfer(source, target, "--replace")
        assert result.returncode == 0, result.stderr
        assert "only SQLite -> PostgreSQL is supported" not in result.stderr
    result = transfer("mysql://u:s3cret-pw@h/db", postgres_url)
    assert result.returncode == 1
    assert_one_clear_error(result.stderr, "is not supported")
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_an_unreachable_target_names_host_and_port_but_never_the_password(sqlite_url):
    make_source(sqlite_url, [(1, "a", "2026-01-01 00:00:00")])

    result = transfer(sqlite_url, "postgresql://user:s3cret-pw@127.0.0.1:1/db", "--db-wait=1", timeout=60)

    assert result.returncode == 1
    assert_one_clear_error(result.stderr, "target", "127.0.0.1:1")
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_an_unreachable_source_is_named(tmp_path):
    missing = tmp_path / "missing.db"
    result = transfer(f"sqlite:///{missing}", "postgresql://user:s3cret-pw@127.0.0.1:1/db")
    assert result.returncode == 1
    assert_one_clear_error(result.stderr, f"source unreachable: SQLite file {missing} does not exist")
    assert not missing.exists()


def test_a_directory_given_as_the_source_is_named_as_one(tmp_path):
    result = transfer(f"sqlite:///{tmp_path}", "postgresql://user:s3cret-pw@127.0.0.1:1/db")
    assert result.returncode == 1
    assert_one_clear_error(result.stderr, f"source unreachable: {tmp_path} is a directory, not an SQLite file")


def test_bad_arguments_exit_1_with_one_line_and_no_password():
    cases = [
        ((), "the following arguments are required"),
        (
            ("sqlite:///a.db", "postgresql://u:s3cret-pw@h/db", "postgresql://u:s3cret-pw@h/db2"),
            "unrecognized arguments",
        ),
        (("sqlite:///a.db", "postgresql://u:s3cret-pw@h/db", "--batch-size=0"), "--batch-size must be 1 or more"),
        (("mysql://u:s3cret-pw@h/db", "postgresql://h/db"), "is not supported"),
    ]
    for args, message in cases:
        result = subprocess.run(
            [sys.executable, "-m", "server.transfer", *args],
            cwd=ROOT,
            env=clean_environ(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, result
        assert_one_clear_error(result.stderr, message)
        assert "s3cret-pw" not in result.stdout + result.stderr


# --- interrupted -------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_sigkill_in_the_middle_of_the_copy_leaves_the_target_empty(sqlite_url, postgres_url, tmp_path):
    make_source(sqlite_url, ((i, f"row {i}", "2026-01-01 00:00:00") for i in range(1, 5001)))
    in_thread(Migrator(make_settings(postgres_url)).upgrade)
    stall_at(postgres_url, 4000, 3)  # rows 1..3999 are in, uncommitted, when the kill comes
    process = start_transfer(sqlite_url, postgres_url, tmp_path / "transfer.log")
    try:
        wait_for(lambda: transfer_is_stalled(postgres_url), 30, "the COPY to reach row 4000")
        assert "my_table: copying 5,000 rows" in (tmp_path / "transfer.log").read_text()
        process.send_signal(signal.SIGKILL)
        assert process.wait(10) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait(10)
    # Its server process notices the dead connection once the trigger lets it read again, and rolls back.
    wait_for(lambda: not transfer_backends(postgres_url), 30, "the killed transfer's backend to go")
    assert target_rows(postgres_url) == []


@pytest.mark.postgres
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_in_the_middle_of_the_copy_rolls_back_and_exits_128_plus_it(
    sqlite_url, postgres_url, tmp_path, signum, status
):
    make_source(sqlite_url, ((i, f"row {i}", "2026-01-01 00:00:00") for i in range(1, 5001)))
    in_thread(Migrator(make_settings(postgres_url)).upgrade)
    stall_at(postgres_url, 4000, 30)
    log = tmp_path / "transfer.log"
    process = start_transfer(sqlite_url, postgres_url, log)
    try:
        wait_for(lambda: transfer_is_stalled(postgres_url), 30, "the COPY to reach row 4000")
        process.send_signal(signum)
        assert process.wait(10) == status, log.read_text()
    finally:
        process.kill()
        process.wait(10)
    assert_one_clear_error(log.read_text(), f"interrupted by {signal.Signals(signum).name}", "nothing was committed")
    # Its server process was ended at once, sleeping trigger and all: nothing holds the table, nothing is in it.
    assert not transfer_backends(postgres_url)
    pg_execute(postgres_url, "BEGIN; SET LOCAL lock_timeout = 2000; LOCK TABLE my_table IN ACCESS EXCLUSIVE MODE; END")
    assert target_rows(postgres_url) == []


@pytest.mark.postgres
def test_sigint_while_rows_stream_in_rolls_back(big_source, postgres_url, tmp_path):
    # No trigger: the signal lands while the process is busy feeding the COPY, not waiting on PostgreSQL.
    log = tmp_path / "transfer.log"
    process = start_transfer(big_source, postgres_url, log)
    try:
        wait_for(lambda: "my_table: copying 300,000 rows" in log.read_text(), 60, "the copy to start")
        time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 130, log.read_text()
    finally:
        process.kill()
        process.wait(10)
    assert "committed:" not in log.read_text()
    assert_one_clear_error(log.read_text(), "interrupted by SIGINT")
    assert target_rows(postgres_url) == []
    assert query(postgres_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]  # the migration stays


@pytest.mark.postgres
def test_sigint_while_the_target_migrates_stops_before_the_copy(extra_revisions, sqlite_url, postgres_url, tmp_path):
    ini, add = extra_revisions
    add(
        "0003",
        "0002",
        'op.create_table("extra", sa.Column("id", sa.Integer, primary_key=True))\n'
        'time.sleep(float(os.environ.get("SLOW_0003", "0")))',
        imports="import os",
    )
    make_source(sqlite_url, [(1, "a", "2026-01-01 00:00:00")], None, f"--alembic-config={ini}")
    log = tmp_path / "transfer.log"
    process = start_transfer(sqlite_url, postgres_url, log, ALEMBIC_CONFIG=ini, SLOW_0003=2)
    try:
        wait_for(lambda: "Running upgrade 0002 -> 0003" in log.read_text(), 30, "revision 0003 to start")
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 130, log.read_text()
    finally:
        process.kill()
        process.wait(10)
    assert_one_clear_error(log.read_text(), "interrupted by SIGINT before the copy began: nothing was copied")
    # The revision that was running finished, as when a server start is interrupted; no row was copied.
    assert query(postgres_url, "SELECT version_num FROM alembic_version") == [("0003",)]
    assert target_rows(postgres_url) == []


@pytest.mark.postgres
def test_300k_rows_arrive_with_matching_checksums(big_source, postgres_url):
    result = transfer(big_source, postgres_url)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^my_table\s+300,000\s+300,000\s+(\w+)\s+\1\s+match$", result.stdout, re.MULTILINE), result.stdout
    assert query(postgres_url, "SELECT count(*), max(id) FROM my_table") == [(300_000, 300_000)]
    assert query(postgres_url, "SELECT id, name, created_at FROM my_table WHERE id IN (1, 300000) ORDER BY id") == [
        (1, "row 1 🎉", datetime.datetime(2026, 1, 1, 0, 0, 1, 1, tzinfo=UTC)),
        (300_000, "row 300000 🎉", datetime.datetime(2026, 1, 1, 0, 0, 0, 300_000, tzinfo=UTC)),
    ]
    assert next_id(postgres_url) == 300_001
