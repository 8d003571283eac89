"""alembic/env.py: Alembic run by hand targets the server's database and takes the server's migration lock."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from conftest import (
    clean_environ,
    column_names,
    is_sqlite,
    migration_lock_held,
    query,
    run_alembic,
    sqlite_path,
    table_names,
    versions,
)
from server.settings import ROOT

# What a user types: the `alembic` console script of the environment the project is installed in.
ALEMBIC = Path(sys.executable).with_name("alembic")


def alembic_from_repo_root(*args: str, **environ) -> subprocess.CompletedProcess:
    """`alembic ARGS` from the repository root with no ALEMBIC_CONFIG: it finds ./alembic.ini itself."""
    return subprocess.run(
        [str(ALEMBIC), *args],
        cwd=ROOT,
        env=clean_environ(**environ),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def wait_for_text(path: Path, pattern: str, process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")
        if re.search(pattern, text):
            return text
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} within {timeout} s (exit {process.poll()}):\n{path.read_text()}")


# --- upgrade by hand, then the server ------------------------------------------------------------------


def test_upgrade_head_by_hand_then_the_server_finds_it_at_head(database_url, start_server):
    upgraded = alembic_from_repo_root("upgrade", "head", DATABASE_URL=database_url)
    assert upgraded.returncode == 0, upgraded.stderr

    current = alembic_from_repo_root("current", DATABASE_URL=database_url)
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == "0002 (head)"
    assert versions(database_url) == ["0002"]
    assert column_names(database_url, "my_table") == ["id", "name", "created_at"]

    server = start_server(DATABASE_URL=database_url)
    server.wait_ready()
    assert server.stop() == 0
    assert "database already at head (0002)" in server.log
    assert "applied revision" not in server.log
    assert "Running upgrade" not in server.log


def test_alembic_check_by_hand_finds_the_models_and_the_revisions_in_step(database_url, tmp_path):
    assert run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=database_url).returncode == 0

    checked = run_alembic("check", cwd=tmp_path, DATABASE_URL=database_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No new upgrade operations detected." in checked.stdout


def test_downgrade_base_by_hand_removes_everything_of_my_table(database_url, tmp_path):
    assert run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=database_url).returncode == 0

    downgraded = run_alembic("downgrade", "base", cwd=tmp_path, DATABASE_URL=database_url)
    assert downgraded.returncode == 0, downgraded.stderr

    assert table_names(database_url) <= {"alembic_version"}
    assert versions(database_url) == []
    if is_sqlite(database_url):
        # Batch mode's copy (_alembic_tmp_my_table) and indexes would be listed here too.
        leftovers = query(database_url, "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        assert leftovers == [("table", "alembic_version")]
    else:
        relations = query(
            database_url,
            "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' ORDER BY c.relname",
        )
        # The table, its primary key index and its id sequence are gone; the version table stays.
        assert relations == [("alembic_version", "r"), ("alembic_version_pkc", "i")]
    assert run_alembic("current", cwd=tmp_path, DATABASE_URL=database_url).stdout.strip() == ""


def test_downgrade_one_by_hand_drops_created_at_and_keeps_the_rows(database_url, tmp_path):
    assert run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=database_url).returncode == 0
    query(database_url, "INSERT INTO my_table (name) VALUES ('first'), ('second')")

    downgraded = run_alembic("downgrade", "-1", cwd=tmp_path, DATABASE_URL=database_url)
    assert downgraded.returncode == 0, downgraded.stderr

    assert versions(database_url) == ["0001"]
    assert column_names(database_url, "my_table") == ["id", "name"]
    assert query(database_url, "SELECT id, name FROM my_table ORDER BY id") == [(1, "first"), (2, "second")]
    if is_sqlite(database_url):
        assert table_names(database_url) == {"alembic_version", "my_table"}  # batch mode's copy is gone


# --- the same environment means the same database --------------------------------------------------------


def test_without_database_url_alembic_and_the_server_share_var_app_db_in_the_working_directory(tmp_path, start_server):
    workdir = tmp_path / "somewhere"
    workdir.mkdir()

    upgraded = run_alembic("upgrade", "head", cwd=workdir)
    assert upgraded.returncode == 0, upgraded.stderr
    database = workdir / "var" / "app.db"
    assert database.is_file()
    assert versions(f"sqlite:///{database}") == ["0002"]

    server = start_server(cwd=workdir)
    server.wait_ready()
    assert server.stop() == 0
    assert "database already at head (0002)" in server.log
    assert "applied revision" not in server.log
    assert sorted(p.name for p in (workdir / "var").iterdir()) == ["app.db", "app.db.migration-lock"]


# --- offline mode -------------------------------------------------------------------------------------


def test_upgrade_sql_prints_each_revision_in_its_own_transaction_without_a_database(tmp_path):
    # Port 1 answers nothing: offline mode must not try to connect.
    printed = run_alembic(
        "upgrade", "head", "--sql", cwd=tmp_path, timeout=30, DATABASE_URL="postgresql://nobody@127.0.0.1:1/x"
    )
    assert printed.returncode == 0, printed.stderr
    sql = printed.stdout
    statements = re.findall(r"^(BEGIN|COMMIT|CREATE TABLE \w+|ALTER TABLE \w+ ADD COLUMN \w+)", sql, re.MULTILINE)
    assert statements == [
        "BEGIN",
        "CREATE TABLE alembic_version",
        "CREATE TABLE my_table",
        "COMMIT",
        "BEGIN",
        "ALTER TABLE my_table ADD COLUMN created_at",
        "COMMIT",
    ], sql
    assert "UPDATE alembic_version SET version_num='0002'" in sql
    assert not (tmp_path / "var").exists()


def test_upgrade_sql_never_prints_the_password(tmp_path):
    printed = run_alembic(
        "upgrade",
        "head",
        "--sql",
        cwd=tmp_path,
        timeout=30,
        DATABASE_URL="postgresql://nobody:Sup3r-s3cret-pw@127.0.0.1:1/x",
    )
    assert printed.returncode == 0, printed.stderr
    assert "CREATE TABLE my_table" in printed.stdout
    assert "s3cret" not in printed.stdout + printed.stderr


# --- logging ------------------------------------------------------------------------------------------


def test_by_hand_alembic_logs_through_alembic_ini(sqlite_url, tmp_path):
    upgraded = run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=sqlite_url)
    assert upgraded.returncode == 0, upgraded.stderr
    log = upgraded.stderr
    # alembic.ini's format, "LEVEL [logger] message", on stderr.
    assert re.search(r"^INFO  \[alembic\.runtime\.migration\] Running upgrade  -> 0001, create my_table$", log, re.M)
    assert re.search(r"^INFO  \[alembic\.runtime\.migration\] Running upgrade 0001 -> 0002, ", log, re.M), log
    assert re.search(r"^INFO  \[server\.migrations\.lock\] took the migration lock", log, re.M), log
    assert "sqlalchemy.engine" not in log  # its logger stays at WARNING: no SQL echoed

    again = run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=sqlite_url)
    assert again.returncode == 0, again.stderr
    assert "Running upgrade" not in again.stderr


# --- the migration lock ----------------------------------------------------------------------------------


def test_by_hand_alembic_waits_for_the_migration_lock_and_gives_up_at_the_timeout(database_url, tmp_path):
    waiter_log = tmp_path / "waiter.log"
    with migration_lock_held(database_url):
        started = time.monotonic()
        refused = run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=database_url, MIGRATION_LOCK_TIMEOUT=1)
        took = time.monotonic() - started
        assert refused.returncode != 0, refused.stderr
        assert "lock" in refused.stderr.strip().splitlines()[-1], refused.stderr  # the cause, last
        assert 1 <= took < 20
        if not is_sqlite(database_url) or sqlite_path(database_url).exists():
            assert "my_table" not in table_names(database_url)

        with open(waiter_log, "wb") as log:
            waiter = subprocess.Popen(
                [sys.executable, "-m", "alembic", "upgrade", "head"],
                cwd=tmp_path,
                env=clean_environ(
                    ALEMBIC_CONFIG=ROOT / "alembic.ini", DATABASE_URL=database_url, MIGRATION_LOCK_TIMEOUT=30
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            waiting = wait_for_text(waiter_log, r"waiting for the migration lock, held by .+", waiter, timeout=15)
            # Who holds it: the application name on PostgreSQL, the lock file's contents on SQLite.
            holder = "test holder" if not is_sqlite(database_url) else f"pid {os.getpid()}"
            assert holder in waiting
            time.sleep(0.5)
            assert waiter.poll() is None, waiter_log.read_text()
            assert "Running upgrade" not in waiter_log.read_text()
        except BaseException:
            waiter.kill()
            waiter.wait(10)
            raise

    try:
        assert waiter.wait(30) == 0, waiter_log.read_text()
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait(10)
    assert "Running upgrade 0001 -> 0002" in waiter_log.read_text()
    assert versions(database_url) == ["0002"]


def test_by_hand_a_lock_timeout_or_an_unreachable_database_is_one_line_not_a_traceback(sqlite_url, tmp_path):
    # Conditions an operator meets, not bugs in the code: reported as Alembic reports its own (FAILED: ...).
    with migration_lock_held(sqlite_url):
        refused = run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=sqlite_url, MIGRATION_LOCK_TIMEOUT=0.5)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert re.search(r"^FAILED: .*migration lock", output, re.M), output
    assert "Traceback" not in output, output

    unreachable = run_alembic(
        "upgrade", "head", cwd=tmp_path, DATABASE_URL="postgresql://nobody:Sup3r-s3cret@127.0.0.1:1/x", DB_WAIT=0.5
    )
    output = unreachable.stdout + unreachable.stderr
    assert unreachable.returncode != 0
    assert re.search(r"^FAILED: .*127\.0\.0\.1:1", output, re.M), output
    assert "s3cret" not in output
    assert "Traceback" not in output, output


# --- a failing revision -------------------------------------------------------------------------------


def test_a_failing_revision_by_hand_leaves_the_database_at_the_last_good_one(database_url, extra_revisions, tmp_path):
    ini, add = extra_revisions
    add(
        "0003",
        "0002",
        # One line: the fixture indents only the first line of a longer body correctly.
        upgrade='op.create_table("extra_table", sa.Column("id", sa.Integer(), primary_key=True)); '
        'op.execute("INSERT INTO extra_table (id) VALUES (1)"); op.execute("INSERT INTO extra_table (id) VALUES (1)")',
    )

    failed = run_alembic("upgrade", "head", cwd=tmp_path, ALEMBIC_CONFIG=ini, DATABASE_URL=database_url)
    assert failed.returncode != 0, failed.stderr
    assert "Running upgrade 0002 -> 0003" in failed.stderr
    assert versions(database_url) == ["0002"]
    assert table_names(database_url) == {"alembic_version", "my_table"}
    assert column_names(database_url, "my_table") == ["id", "name", "created_at"]

    # The lock went with the failed run: the next one takes it at once and finds 0003 still pending.
    current = run_alembic(
        "current", cwd=tmp_path, ALEMBIC_CONFIG=ini, DATABASE_URL=database_url, MIGRATION_LOCK_TIMEOUT=1
    )
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == "0002"
