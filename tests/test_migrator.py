"""The migrator: status and upgrade in-process, and many migrators at once (processes, a manual alembic,
a killed lock holder, lock timeouts, --processes), always against real databases and real processes."""

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from conftest import clean_environ, in_thread, make_settings, run_alembic, run_async
from server.migrator import Migrator, Revision, UnknownRevision, make_migration_engine, migration_lock
from server.settings import ROOT

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


def query(url: str, sql: str) -> list[tuple]:
    """Rows of one statement, run beside the server (sqlite3 or asyncpg), committed."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert os.path.exists(parsed.database), f"no SQLite file at {parsed.database}"
        with contextlib.closing(sqlite3.connect(parsed.database, timeout=30)) as connection, connection:
            return [tuple(row) for row in connection.execute(sql).fetchall()]

    async def run():
        connection = await asyncpg.connect(url, timeout=10)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    return run_async(run)


def versions(url: str) -> list[tuple]:
    return query(url, "SELECT version_num FROM alembic_version")


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR [" in line]


def ready_pids(log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"^\S+ \S+ INFO \[(\d+) server\] ready$", log, re.MULTILINE)]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_for_log(server, needle: str, timeout: float = 30) -> None:
    def seen():
        if server.process.poll() is not None and needle not in server.log:
            raise AssertionError(f"server exited {server.process.returncode} before logging {needle!r}:\n{server.log}")
        return needle in server.log

    try:
        wait_for(seen, timeout, repr(needle))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{server.log}") from None


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def holder_name(backend: str, label: str, pid: int) -> str:
    """How a waiter names the migrator holding the lock: its PostgreSQL application name, or the lock file."""
    if backend == "postgres":
        return f"({f'{label} on {socket.gethostname()} pid {pid}'[:63]})"
    return f"pid {pid} on {socket.gethostname()}"


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


def started_workers(log: str) -> list[int]:
    """The worker pids the --processes parent reports having forked."""
    return [
        int(pid)
        for line in re.findall(r"started \d+ workers: ([\d, ]+)$", log, re.MULTILINE)
        for pid in line.split(", ")
    ]


@contextlib.contextmanager
def killing_leftover_workers(server):
    """However the test ends, no worker outlives it (a parent that failed to stop them would leak them)."""
    try:
        yield
    finally:
        for pid in started_workers(server.log):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def assert_clean(log: str) -> None:
    assert "Traceback" not in log, log
    assert not error_lines(log), log


@contextlib.contextmanager
def held_in_thread(make_context, limit: float = 60.0):
    """Enter an async context manager on a thread and event loop of its own; leave it when the block ends."""
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    async def hold():
        async with make_context():
            entered.set()
            deadline = time.monotonic() + limit  # bounded even if the test forgets to release
            while not release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)

    def run():
        try:
            asyncio.run(hold())
        except BaseException as exc:  # handed to the test below, never left as an unhandled thread error
            errors.append(exc)
        finally:
            entered.set()

    thread = threading.Thread(target=run, name="holder", daemon=True)
    thread.start()
    try:
        assert entered.wait(30), "the holder did not get hold within 30 s"
        assert not errors, errors
        yield
    finally:
        release.set()
        thread.join(30)
    assert not thread.is_alive(), "the holder did not let go within 30 s"
    assert not errors, errors


def migration_lock_of(url: str):
    """The migration lock on url's database, as another migrator (label "test", this pid) holds it."""

    @contextlib.asynccontextmanager
    async def hold():
        settings = make_settings(url)
        engine = make_migration_engine(settings.database_url, label="test")
        try:
            async with migration_lock(engine, settings, threading.Event()):
                yield
        finally:
            await engine.dispose()

    return hold


def long_reader_of(url: str):
    """A transaction reading my_table (ACCESS SHARE held), as a long report would."""

    @contextlib.asynccontextmanager
    async def hold():
        connection = await asyncpg.connect(url, timeout=10)
        try:
            async with connection.transaction():
                await connection.execute("LOCK TABLE my_table IN ACCESS SHARE MODE")
                yield
        finally:
            await connection.close()

    return hold


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
    assert versions(database_url) == [("0002",)]


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
    assert versions(database_url) == [("zzzz",)]


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

    assert versions(url) == [("0003",)]
    assert len(query(url, "SELECT pid FROM migration_runs")) == 1
    logs = [server.log for server in servers]
    assert sum(log.count("applied revision 0003") for log in logs) == 1, logs
    for log in logs:
        assert_clean(log)
    # Waiters say who holds the lock: one of these servers (a PostgreSQL backend pid and its application name).
    waits = [line for log in logs for line in log.splitlines() if "waiting for the migration lock, held by" in line]
    names = [holder_name(backend, "server", server.process.pid) for server in servers]
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
    assert versions(database_url) == [("0003",)]
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

    name = holder_name(backend_of(database_url), "server", holder.process.pid)
    assert re.search(rf"waiting for the migration lock, held by .*{re.escape(name)}", waiter.log), waiter.log
    assert "applied revision 0003" in waiter.log
    assert "applied revision 0003" not in holder.log
    assert versions(database_url) == [("0003",)]
    assert query(database_url, "SELECT pid FROM migration_runs") == [(waiter.process.pid,)]
    assert_clean(waiter.log)
    assert waiter.stop() == 0, waiter.log


def test_lock_timeout_exits_1_with_one_line_naming_the_lock(database_url, start_server):
    with held_in_thread(migration_lock_of(database_url)):
        server = start_server(DATABASE_URL=database_url, MIGRATION_LOCK_TIMEOUT="1")
        code = server.wait_exit(timeout=60)

    assert code == 1, server.log
    assert "Traceback" not in server.log, server.log
    errors = error_lines(server.log)
    assert len(errors) == 1, server.log
    assert "lock" in errors[0]
    assert holder_name(backend_of(database_url), "test", os.getpid()) in errors[0]  # who holds it: this test
    assert in_thread(Migrator(make_settings(database_url)).status).current == ()


# --- PostgreSQL: table locks and CREATE INDEX CONCURRENTLY ------------------------------------------


@pytest.mark.postgres
def test_ddl_lock_timeout_fails_the_revision_behind_a_long_reader(postgres_url, extra_revisions, start_server):
    in_thread(Migrator(make_settings(postgres_url)).upgrade)
    ini, add = extra_revisions
    add("0003", "0002", 'op.add_column("my_table", sa.Column("note", sa.String(20)))')

    with held_in_thread(long_reader_of(postgres_url)):
        started = time.monotonic()
        server = start_server(DATABASE_URL=postgres_url, ALEMBIC_CONFIG=str(ini), DDL_LOCK_TIMEOUT="1")
        code = server.wait_exit(timeout=60)
        elapsed = time.monotonic() - started

    assert code == 1, server.log
    assert elapsed < 20, f"took {elapsed:.1f} s to give up:\n{server.log}"
    assert "Traceback" not in server.log, server.log
    errors = error_lines(server.log)
    assert len(errors) == 1, server.log
    assert "0003" in errors[0] and "lock timeout" in errors[0], errors
    assert versions(postgres_url) == [("0002",)]
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
        """,
    )

    server = start_server(DATABASE_URL=postgres_url, ALEMBIC_CONFIG=str(ini))
    server.wait_ready(timeout=60)

    valid = query(
        postgres_url,
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = 'ix_my_table_name'",
    )
    assert valid == [(True,)]
    assert versions(postgres_url) == [("0003",)]
    assert_clean(server.log)
    assert server.stop() == 0, server.log


# --- --processes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("processes", ["2", "0"])
def test_processes_workers_migrate_once_serve_and_stop_together(database_url, processes, start_server):
    workers = int(processes) or os.cpu_count()
    server = start_server(f"--processes={processes}", DATABASE_URL=database_url)
    with killing_leftover_workers(server):
        wait_for(lambda: len(set(ready_pids(server.log))) >= workers, 60, f"{workers} workers ready")

        pids = set(ready_pids(server.log))
        assert len(pids) == workers and pids == set(started_workers(server.log)), server.log
        for _ in range(4):
            status, body, headers = server.get("/")
            assert status == 200 and headers["Content-Type"] == "application/json", body
        log = server.log
        assert log.count("applied revision 0001") == 1 and log.count("applied revision 0002") == 1, log

        assert server.stop(timeout=30) == 0, server.log
        assert not [pid for pid in pids if is_alive(pid)], server.log
        assert_clean(server.log)


def stop_via_process_group(workdir, database_url: str, signum: int, workers: int) -> None:
    """Start --processes as the leader of a session of its own, signal the whole group once ready: exit 0."""
    log_path = workdir / f"group-{signal.Signals(signum).name}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "--port=0", f"--processes={workers}"],
            cwd=workdir,
            env=clean_environ(DATABASE_URL=database_url),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for(lambda: len(set(ready_pids(log_path.read_text()))) >= workers, 60, f"{workers} workers ready")
        pids = set(ready_pids(log_path.read_text()))

        os.killpg(process.pid, signum)
        code = process.wait(30)

        log = log_path.read_text()
        assert code == 0, f"{signal.Signals(signum).name} to the group: exit {code}\n{log}"
        assert not [pid for pid in pids if is_alive(pid)], log
        assert_clean(log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_processes_stop_signal_to_the_whole_process_group_exits_0(sqlite_url, tmp_path):
    # Each worker gets the signal twice: from the group, and forwarded by the parent. The second one can
    # land while the worker's event loop is closing, a narrow race: rounds (and more workers than CPUs, so
    # the parent is often late to forward) give it room to show.
    for signum in [signal.SIGTERM] * 24 + [signal.SIGINT] * 6:
        stop_via_process_group(tmp_path, sqlite_url, signum, workers=4)


def test_processes_a_worker_failing_at_startup_stops_the_service_with_exit_1(start_server):
    server = start_server("--processes=2", DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere", DB_WAIT="1")

    with killing_leftover_workers(server):
        code = server.wait_exit(timeout=60)
    assert code == 1, server.log
    log = server.log
    assert "Traceback" not in log, log
    started = re.findall(r"started 2 workers: (\d+), (\d+)$", log, re.MULTILINE)
    assert len(started) == 1, log
    workers = {int(pid) for pid in started[0]}
    failures = [int(pid) for pid in re.findall(r" ERROR \[(\d+) server\] database unreachable", log)]
    assert failures, log
    assert set(failures) <= workers and len(failures) == len(set(failures)), log  # each failed at most once
    logged_pids = {int(pid) for pid in re.findall(r"^\S+ \S+ \w+ \[(\d+) ", log, re.MULTILINE)}
    assert logged_pids <= workers | {server.process.pid}, log  # no worker was started again
    assert not [pid for pid in workers if is_alive(pid)], log


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
