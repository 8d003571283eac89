"""The migration lock lives with the work (PostgreSQL): crashes, server timeouts, a lost lock, lock waits retried."""

import re
import time

import pytest

from conftest import (
    assert_clean,
    assert_one_clear_error,
    error_lines,
    held_in_thread,
    query,
    run_alembic,
    table_lock_of,
    upgrade_in_process,
    versions,
    wait_for,
    wait_for_log,
)

pytestmark = pytest.mark.postgres

# 0003 notes in a file when it starts and ends (RUN_LOG), creates a table recording the pid of the process that
# ran it, and then sleeps in Python (SLOW_0003) or in the database (SLEEP_0003), inside its transaction.
RECORDED_RUN = """
    def note(event):
        if is_linting():  # the lint runs upgrade() once more, recording: not a run
            return
        with open(os.environ["RUN_LOG"], "a") as log:
            log.write(f"{event} {os.getpid()} {time.time()}\\n")

    note("start")
    op.create_table("migration_runs", sa.Column("pid", sa.Integer, nullable=False))
    op.execute(f"INSERT INTO migration_runs (pid) VALUES ({os.getpid()})")
    time.sleep(float(os.environ.get("SLOW_0003", "0")))
    op.execute(f"SELECT pg_sleep({float(os.environ.get('SLEEP_0003', '0'))})")
    note("end")
"""


def runs_of(run_log) -> list[tuple[int, float, float]]:
    """(pid, start, end) of each run of 0003 that got to its end, from RUN_LOG; a start never ended counts as
    running until now."""
    started: dict[int, float] = {}
    runs = []
    for line in run_log.read_text().splitlines() if run_log.exists() else []:
        event, pid, at = line.split()
        if event == "start":
            started[int(pid)] = float(at)
        else:
            runs.append((int(pid), started.pop(int(pid)), float(at)))
    return runs + [(pid, at, time.time()) for pid, at in started.items()]


def assert_never_two_at_once(runs) -> None:
    runs = sorted(runs, key=lambda run: run[1])
    for before, after in zip(runs, runs[1:], strict=False):
        assert after[1] >= before[2], f"two migrators inside 0003 at once: {runs}"


def assert_applied_once(url: str, pid: int) -> None:
    assert versions(url) == ["0003"]
    assert query(url, "SELECT pid FROM migration_runs") == [(pid,)]
    # No leftover of a second run: one table, one row type of that name.
    assert query(url, "SELECT count(*) FROM pg_class WHERE relname = 'migration_runs'") == [(1,)]
    assert query(url, "SELECT count(*) FROM pg_type WHERE typname = 'migration_runs'") == [(1,)]


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def set_on_database(url: str, setting: str, value: str) -> None:
    """ALTER DATABASE … SET, as an operator would: every new session of that database gets it."""
    query(url, f"ALTER DATABASE \"{database_name(url)}\" SET {setting} = '{value}'")


def sleeping_backends(url: str) -> list[tuple]:
    return query(
        url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(60%'"
        " AND pid <> pg_backend_pid()",
    )


@pytest.fixture
def recorded_0003(postgres_url, extra_revisions, tmp_path):
    """A database at 0002, RECORDED_RUN pending as 0003: (RUN_LOG path, the migrators' environment)."""
    upgrade_in_process(postgres_url)
    ini, add = extra_revisions
    add("0003", "0002", RECORDED_RUN, imports="import os")
    run_log = tmp_path / "runs.log"
    return run_log, dict(DATABASE_URL=postgres_url, ALEMBIC_CONFIG=str(ini), RUN_LOG=str(run_log))


# --- the server closing idle sessions ----------------------------------------------------------------


@pytest.mark.parametrize("second", ["server", "alembic"])
def test_with_idle_session_timeouts_of_2_s_two_migrators_never_run_a_revision_at_once(
    postgres_url, recorded_0003, start_server, tmp_path, second
):
    run_log, environ = recorded_0003
    # Every new session of the database is closed by the server after 2 s idle, in a transaction or not:
    # the migrator's session must turn both off for itself, or the lock would go with it mid-revision.
    set_on_database(postgres_url, "idle_session_timeout", "2s")
    set_on_database(postgres_url, "idle_in_transaction_session_timeout", "2s")
    environ = dict(environ, SLOW_0003="5")

    first = start_server("--migrate=only", **environ)
    wait_for(lambda: runs_of(run_log), 30, "the first migrator inside 0003")
    if second == "server":
        other = start_server("--migrate=only", **environ)
        wait_for_log(other, "waiting for the migration lock, held by")
        assert other.wait_exit(timeout=60) == 0, other.log
        assert_clean(other.log)
        assert "applied revision" not in other.log, other.log
    else:
        manual = run_alembic("upgrade", "head", cwd=tmp_path, **environ)
        assert manual.returncode == 0, manual.stderr
        assert "Running upgrade" not in manual.stderr, manual.stderr
    assert first.wait_exit(timeout=60) == 0, first.log
    assert_clean(first.log)

    runs = runs_of(run_log)
    assert_never_two_at_once(runs)
    assert [pid for pid, _, _ in runs] == [first.process.pid], runs
    assert_applied_once(postgres_url, first.process.pid)


# --- a migrator killed in the middle of a revision ----------------------------------------------------


@pytest.mark.parametrize("second", ["server", "alembic"])
def test_sigkill_during_a_revisions_long_statement_then_a_restart_at_once_is_ready_within_20_s(
    postgres_url, recorded_0003, start_server, tmp_path, second
):
    run_log, environ = recorded_0003

    killed = start_server(SLEEP_0003="60", **environ)
    wait_for(lambda: sleeping_backends(postgres_url), 30, "0003's pg_sleep(60) running")
    killed.process.kill()
    killed.process.wait(10)

    started = time.monotonic()
    if second == "server":
        restarted = start_server(**environ)
        restarted.wait_ready(timeout=20)
        pid, log = restarted.process.pid, restarted.log
    else:
        manual = run_alembic("upgrade", "head", cwd=tmp_path, timeout=20, **environ)
        assert manual.returncode == 0, manual.stderr
        pid, log = None, manual.stderr
    elapsed = time.monotonic() - started

    assert elapsed < 20, f"{elapsed:.1f} s:\n{log}"
    # The dead migrator's backend noticed the closed socket and cancelled its statement: it holds nothing.
    assert sleeping_backends(postgres_url) == []
    runs = runs_of(run_log)
    assert len([run for run in runs if run[0] == killed.process.pid]) == 1, runs  # started, never committed
    finished = [run for run in runs if run[0] != killed.process.pid]
    assert len(finished) == 1, runs
    assert versions(postgres_url) == ["0003"]
    assert_applied_once(postgres_url, pid or finished[0][0])
    if second == "server":
        assert_clean(log)
        assert "applied revision 0003" in log
        assert restarted.stop() == 0, restarted.log


# --- losing the lock -------------------------------------------------------------------------------------

# A session advisory lock can be released only by the session holding it (no function releases another
# session's lock), or by the session's end, which also fails its running revision. The one way a live
# migrator loses it is its own session letting go: a revision that runs pg_advisory_unlock_all().
LET_GO = 'op.execute("SELECT pg_advisory_unlock_all()")'


def test_a_revision_that_releases_the_lock_stops_the_server_before_the_next_one(
    postgres_url, extra_revisions, start_server
):
    upgrade_in_process(postgres_url)
    ini, add = extra_revisions
    add("0003", "0002", LET_GO)
    add("0004", "0003", 'op.create_table("after_the_lock", sa.Column("id", sa.Integer))')

    server = start_server(DATABASE_URL=postgres_url, ALEMBIC_CONFIG=str(ini))
    assert server.wait_exit(timeout=60) == 1, server.log

    assert_one_clear_error(server, "migration lock is no longer held")
    assert versions(postgres_url) == ["0003"]
    assert "after_the_lock" not in {name for (name,) in query(postgres_url, "SELECT tablename FROM pg_tables")}


def test_by_hand_a_revision_that_releases_the_lock_stops_before_the_next_one(postgres_url, extra_revisions, tmp_path):
    upgrade_in_process(postgres_url)
    ini, add = extra_revisions
    add("0003", "0002", LET_GO)
    add("0004", "0003", 'op.create_table("after_the_lock", sa.Column("id", sa.Integer))')

    manual = run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=postgres_url, ALEMBIC_CONFIG=str(ini))

    assert manual.returncode != 0, manual.stderr
    assert "Traceback" not in manual.stderr, manual.stderr
    assert "migration lock is no longer held" in manual.stderr, manual.stderr
    assert versions(postgres_url) == ["0003"]


def test_the_migration_session_turns_the_servers_idle_timeouts_off(postgres_url, extra_revisions, start_server):
    upgrade_in_process(postgres_url)
    set_on_database(postgres_url, "idle_session_timeout", "2s")
    ini, add = extra_revisions
    add(
        "0003",
        "0002",
        """
        bind = op.get_bind()
        settings = ("idle_session_timeout", "idle_in_transaction_session_timeout", "client_connection_check_interval")
        values = [bind.exec_driver_sql(f"SHOW {name}").scalar() for name in settings]
        print("session settings:", *values, flush=True)
        """,
    )

    server = start_server(DATABASE_URL=postgres_url, ALEMBIC_CONFIG=str(ini))
    server.wait_ready(timeout=60)

    assert "session settings: 0 0 1s" in server.log, server.log
    assert server.stop() == 0, server.log


# --- --ddl-lock-retries --------------------------------------------------------------------------------

ADD_NOTE = 'op.add_column("my_table", sa.Column("note", sa.String(20)))'
RETRYING = re.compile(
    r"WARNING .*revision 0003: a table lock was not granted.* retrying.* in (\d+) s \((\d+) retries left\)"
)


def test_a_table_locked_past_the_ddl_lock_timeout_but_within_the_retries_becomes_ready(
    postgres_url, extra_revisions, start_server
):
    upgrade_in_process(postgres_url)
    ini, add = extra_revisions
    add("0003", "0002", ADD_NOTE)

    with held_in_thread(table_lock_of(postgres_url)):
        server = start_server(DATABASE_URL=postgres_url, ALEMBIC_CONFIG=str(ini), DDL_LOCK_TIMEOUT="1")
        wait_for(lambda: len(RETRYING.findall(server.log)) >= 2, 30, "two retries logged")
    server.wait_ready(timeout=30)

    retries = RETRYING.findall(server.log)
    assert retries[:2] == [("1", "2"), ("2", "1")], server.log  # the pause doubles; each retry says so
    assert versions(postgres_url) == ["0003"]
    assert "note" in {name for (name,) in query(postgres_url, "SELECT column_name FROM information_schema.columns")}
    assert_clean(server.log)
    assert server.stop() == 0, server.log


def test_a_table_locked_past_every_retry_exits_1_with_one_line(postgres_url, extra_revisions, start_server):
    upgrade_in_process(postgres_url)
    ini, add = extra_revisions
    add("0003", "0002", ADD_NOTE)

    with held_in_thread(table_lock_of(postgres_url)):
        server = start_server(
            DATABASE_URL=postgres_url, ALEMBIC_CONFIG=str(ini), DDL_LOCK_TIMEOUT="0.5", DDL_LOCK_RETRIES="2"
        )
        code = server.wait_exit(timeout=60)

    assert code == 1, server.log
    assert RETRYING.findall(server.log) == [("1", "1"), ("2", "0")], server.log
    line = assert_one_clear_error(server, "0003", "lock timeout", "after 2 retries")
    assert len(error_lines(server.log)) == 1, line
    assert versions(postgres_url) == ["0002"]


def test_a_failure_other_than_lock_timeout_is_not_retried(postgres_url, extra_revisions, start_server):
    upgrade_in_process(postgres_url)
    ini, add = extra_revisions
    add("0003", "0002", 'op.execute("SELECT 1/0")')

    server = start_server(DATABASE_URL=postgres_url, ALEMBIC_CONFIG=str(ini))
    assert server.wait_exit(timeout=60) == 1, server.log
    assert not RETRYING.findall(server.log), server.log
    assert_one_clear_error(server, "0003", "division by zero")
