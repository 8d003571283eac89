"""The migrator: status and upgrade in-process, and many migrators at once (processes, a manual alembic,
a killed lock holder, lock timeouts, --processes), always against real databases and real processes."""

import inspect
import os
import re
import time
import urllib.error
import urllib.request

import pytest
from alembic.script import ScriptDirectory

from conftest import (
    assert_clean,
    error_lines,
    held_in_thread,
    holder_name,
    in_thread,
    make_settings,
    migration_lock_held,
    query,
    run_alembic,
    table_lock_of,
    versions,
    wait_for_log,
)
from server.errors import UnknownRevision
from server.migrations import Migrator, Revision

# 0003 creates a table and records the pid of the process that ran it: how many times it ran, and where.
# SLOW_0003 (seconds, in the migrating process's environment) keeps it running inside its transaction.
RECORD_RUN = """
    op.create_table(
        "migration_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("pid", sa.Integer, nullable=False),
    )
    op.execute(f"INSERT INTO migration_runs (pid) VALUES ({os.getpid()})")
    time.sleep(float(os.environ.get("SLOW_0003", "0")))
"""


# --- helpers -----------------------------------------------------------------------------------------


# --- the Migrator, in-process ------------------------------------------------------------------------


def test_status_of_a_fresh_database_lists_every_revision_pending_oldest_first(database_url):
    status = in_thread(Migrator(make_settings(database_url)).status)

    assert status.current == ()
    assert status.heads == ("0002",)
    assert status.pending == (Revision("0001", "create my_table"), Revision("0002", "add my_table.created_at"))
    assert not status.at_head


def test_upgrade_applies_pending_revisions_in_order_then_nothing(database_url):
    migrator = Migrator(make_settings(database_url))

    first = in_thread(migrator.upgrade)
    second = in_thread(migrator.upgrade)

    assert [(r.id, r.message) for r in first.applied] == [
        ("0001", "create my_table"),
        ("0002", "add my_table.created_at"),
    ]
    assert all(r.seconds >= 0 for r in first.applied)
    assert first.status.at_head and first.status.current == ("0002",)
    assert second.applied == ()
    assert second.status.at_head
    assert in_thread(migrator.status).at_head
    assert versions(database_url) == ["0002"]


def test_status_of_a_missing_sqlite_file_creates_neither_file_nor_directory(tmp_path):
    directory = tmp_path / "not-yet"
    url = f"sqlite:///{directory / 'app.db'}"

    status = in_thread(Migrator(make_settings(url)).status)

    assert status.current == () and [r.id for r in status.pending] == ["0001", "0002"]
    assert not directory.exists()


def test_a_revision_this_build_does_not_know_is_unknown_revision(database_url):
    migrator = Migrator(make_settings(database_url))
    in_thread(migrator.upgrade)
    query(database_url, "UPDATE alembic_version SET version_num = 'zzzz'")

    with pytest.raises(UnknownRevision, match="zzzz"):
        in_thread(migrator.status)
    with pytest.raises(UnknownRevision, match="zzzz"):
        in_thread(migrator.upgrade)
    assert versions(database_url) == ["zzzz"]


# --- many migrators at once --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend, count",
    [("sqlite", 4), pytest.param("postgres", 6, marks=pytest.mark.postgres)],
    ids=["sqlite", "postgres"],
)
def test_many_servers_started_at_once_migrate_exactly_once(request, backend, count, extra_revisions, start_server):
    url = request.getfixturevalue(f"{backend}_url")
    ini, add = extra_revisions
    add("0003", "0002", RECORD_RUN, imports="import os")

    servers = [start_server(DATABASE_URL=url, ALEMBIC_CONFIG=str(ini), SLOW_0003="2") for _ in range(count)]
    for server in servers:
        server.wait_ready(timeout=60)

    assert versions(url) == ["0003"]
    assert len(query(url, "SELECT pid FROM migration_runs")) == 1
    logs = [server.log for server in servers]
    assert sum(log.count("applied revision 0003") for log in logs) == 1, logs
    for log in logs:
        assert_clean(log)
    # Waiters say who holds the lock: one of these servers (a PostgreSQL backend pid and its application name).
    waits = [line for log in logs for line in log.splitlines() if "waiting for the migration lock, held by" in line]
    names = [holder_name(url, "server", server.process.pid) for server in servers]
    named = [line for line in waits if any(name in line for name in names)]
    if backend == "postgres":
        named = [line for line in named if re.search(r"held by PostgreSQL pid \d+ \(", line)]
    assert named, logs
    for server in servers:
        assert server.stop() == 0, server.log


def test_servers_and_a_manual_alembic_upgrade_started_together_all_succeed(
    database_url, extra_revisions, start_server, tmp_path
):
    ini, add = extra_revisions
    add("0003", "0002", RECORD_RUN, imports="import os")
    environ = dict(DATABASE_URL=database_url, ALEMBIC_CONFIG=str(ini), SLOW_0003="1")

    servers = [start_server(**environ) for _ in range(3)]
    manual = run_alembic("upgrade", "head", cwd=tmp_path, **environ)
    for server in servers:
        server.wait_ready(timeout=60)

    assert manual.returncode == 0, manual.stderr
    assert "Traceback" not in manual.stderr, manual.stderr
    assert versions(database_url) == ["0003"]
    assert len(query(database_url, "SELECT pid FROM migration_runs")) == 1
    for server in servers:
        assert_clean(server.log)
        assert server.stop() == 0, server.log


def test_sigkill_of_the_lock_holder_lets_the_waiting_server_finish(database_url, extra_revisions, start_server):
    ini, add = extra_revisions
    add("0003", "0002", RECORD_RUN, imports="import os")
    holder = start_server(DATABASE_URL=database_url, ALEMBIC_CONFIG=str(ini), SLOW_0003="60")
    wait_for_log(holder, "Running upgrade 0002 -> 0003")

    waiter = start_server(DATABASE_URL=database_url, ALEMBIC_CONFIG=str(ini))
    wait_for_log(waiter, "waiting for the migration lock, held by")
    holder.process.kill()
    holder.process.wait(10)
    waiter.wait_ready(timeout=60)

    name = holder_name(database_url, "server", holder.process.pid)
    assert re.search(rf"waiting for the migration lock, held by .*{re.escape(name)}", waiter.log), waiter.log
    assert "applied revision 0003" in waiter.log
    assert "applied revision 0003" not in holder.log
    assert versions(database_url) == ["0003"]
    assert query(database_url, "SELECT pid FROM migration_runs") == [(waiter.process.pid,)]
    assert_clean(waiter.log)
    assert waiter.stop() == 0, waiter.log


def test_lock_timeout_exits_1_with_one_line_naming_the_lock(database_url, start_server):
    with migration_lock_held(database_url, label="test"):
        server = start_server(DATABASE_URL=database_url, MIGRATION_LOCK_TIMEOUT="1")
        code = server.wait_exit(timeout=60)

    assert code == 1, server.log
    assert "Traceback" not in server.log, server.log
    errors = error_lines(server.log)
    assert len(errors) == 1, server.log
    assert "lock" in errors[0]
    assert holder_name(database_url, "test", os.getpid()) in errors[0]  # who holds it: this test
    assert in_thread(Migrator(make_settings(database_url)).status).current == ()


# --- PostgreSQL: table locks and CREATE INDEX CONCURRENTLY ------------------------------------------


@pytest.mark.postgres
def test_ddl_lock_timeout_fails_the_revision_behind_a_long_reader(postgres_url, extra_revisions, start_server):
    # Without retries: the timeout alone (tests/migrations/test_lock.py has the retries).
    in_thread(Migrator(make_settings(postgres_url)).upgrade)
    ini, add = extra_revisions
    add("0003", "0002", 'op.add_column("my_table", sa.Column("note", sa.String(20)))')

    with held_in_thread(table_lock_of(postgres_url)):
        started = time.monotonic()
        server = start_server(
            DATABASE_URL=postgres_url, ALEMBIC_CONFIG=str(ini), DDL_LOCK_TIMEOUT="1", DDL_LOCK_RETRIES="0"
        )
        code = server.wait_exit(timeout=60)
        elapsed = time.monotonic() - started

    assert code == 1, server.log
    assert elapsed < 20, f"took {elapsed:.1f} s to give up:\n{server.log}"
    assert "Traceback" not in server.log, server.log
    errors = error_lines(server.log)
    assert len(errors) == 1, server.log
    assert "0003" in errors[0] and "lock timeout" in errors[0], errors
    assert versions(postgres_url) == ["0002"]
    columns = query(postgres_url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'my_table'")
    assert ("note",) not in columns


@pytest.mark.postgres
def test_create_index_concurrently_runs_under_the_migration_lock(postgres_url, extra_revisions, start_server):
    ini, add = extra_revisions
    add(
        "0003",
        "0002",
        """
        with op.get_context().autocommit_block():
            op.create_index("ix_my_table_name", "my_table", ["name"], postgresql_concurrently=True)
            print("inside the autocommit block", flush=True)
            time.sleep(float(os.environ.get("SLOW_0003", "0")))
        """,
        imports="import os",
    )

    server = start_server(DATABASE_URL=postgres_url, ALEMBIC_CONFIG=str(ini), SLOW_0003="4")
    wait_for_log(server, "inside the autocommit block")
    # Out of any transaction, the lock is still held: a second migrator waits rather than interleaving.
    second = start_server(DATABASE_URL=postgres_url, ALEMBIC_CONFIG=str(ini))
    wait_for_log(second, "waiting for the migration lock, held by")
    assert "applied revision 0003" not in server.log, server.log
    server.wait_ready(timeout=60)
    second.wait_ready(timeout=60)
    assert "applied revision 0003" not in second.log, second.log
    assert_clean(second.log)

    valid = query(
        postgres_url,
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = 'ix_my_table_name'",
    )
    assert valid == [(True,)]
    assert versions(postgres_url) == ["0003"]
    assert_clean(server.log)
    assert server.stop() == 0, server.log


# --- --processes --------------------------------------------------------------------------------------


# --- liveness while migrating ------------------------------------------------------------------------


def test_health_live_answers_quickly_all_through_a_slow_revision(database_url, extra_revisions, start_server):
    ini, add = extra_revisions
    # Half waiting, half busy issuing statements: the migrator's thread both sleeps and competes for the GIL.
    add(
        "0003",
        "0002",
        """
        time.sleep(1.5)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            op.execute("SELECT 1")
        """,
    )
    server = start_server(DATABASE_URL=database_url, ALEMBIC_CONFIG=str(ini))
    url = server.url("/health/live")

    during: list[float] = []
    deadline = time.monotonic() + 60
    while "applied revision 0003" not in server.log:
        assert time.monotonic() < deadline, f"0003 did not finish within 60 s:\n{server.log}"
        assert server.process.poll() is None, server.log
        running = "Running upgrade 0002 -> 0003" in server.log
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                assert response.status == 200
                response.read()
        except (urllib.error.URLError, TimeoutError) as exc:
            raise AssertionError(f"/health/live failed while migrating: {exc}\n{server.log}") from None
        latency = time.perf_counter() - started
        if running and "applied revision 0003" not in server.log:
            during.append(latency)
        time.sleep(0.05)

    assert len(during) >= 20, f"only {len(during)} requests while 0003 ran:\n{server.log}"
    during.sort()
    fast = sum(latency <= 0.1 for latency in during) / len(during)
    figures = (
        f"{len(during)} requests during 0003: median {during[len(during) // 2] * 1000:.1f} ms, "
        f"p95 {during[int(len(during) * 0.95)] * 1000:.1f} ms, max {during[-1] * 1000:.1f} ms, "
        f"{fast:.1%} within 100 ms"
    )
    print(figures)
    assert fast >= 0.95, figures
    assert during[-1] < 0.5, figures
    server.wait_ready(timeout=30)
    assert server.stop() == 0, server.log


def test_the_one_private_alembic_call_the_upgrade_makes_still_exists():
    """run_upgrade calls ScriptDirectory._upgrade_revs(destination, current_rev), as command.upgrade does."""
    upgrade_revs = getattr(ScriptDirectory, "_upgrade_revs", None)
    assert upgrade_revs is not None, "Alembic removed ScriptDirectory._upgrade_revs: change run_upgrade"
    assert list(inspect.signature(upgrade_revs).parameters)[:3] == ["self", "destination", "current_rev"]
