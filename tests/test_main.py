"""The server process itself: startup, migrate modes, failures, readiness and shutdown, as `python run.py`."""

import asyncio
import concurrent.futures
import contextlib
import datetime
import http.client
import itertools
import json
import signal
import sqlite3
import threading
import time
import urllib.parse

import asyncpg
import pytest

from conftest import (
    assert_one_clear_error,
    error_lines,
    is_sqlite,
    json_of,
    query,
    run_alembic,
    sqlite_path,
    table_names,
    upgrade_in_process,
    versions,
    wait_for,
)

AWKWARD_NAMES = [
    "Zoë Ünïcødé 🚀 中文 العربية",
    'O\'Brien "the quote" `tick` \\ back\\slash',
    "'; DROP TABLE my_table; --",
    "x" * 50,
    "€" * 49 + "🐍",
    "  leading and trailing  ",
    "tab\there, new\nline",
    "%s %(name)s {0} ? :name $1",
]


# --- helpers ---------------------------------------------------------------------------------------


def post_row(server, name: str) -> dict:
    response = server.request("POST", "/", json.dumps({"name": name}).encode(), {"Content-Type": "application/json"})
    assert response[0] == 201, response
    return json_of(response)


def assert_serves_rows(server) -> None:
    row = post_row(server, "first row")
    response = server.get("/")
    assert response[0] == 200, response
    page = json_of(response)
    assert page["items"] == [row]
    assert page["next"] == row["id"]
    assert row["name"] == "first row" and row["created_at"]


def wait_exit_within(server, seconds: float) -> int:
    started = time.monotonic()
    code = server.wait_exit(seconds)
    assert time.monotonic() - started < seconds
    return code


class HeldConnection:
    """An asyncpg connection on its own loop thread, kept open across the test's steps."""

    def __init__(self, dsn: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.connection = None
        try:
            self.connection = self.call(asyncpg.connect(dsn, timeout=10))
        except BaseException:
            self.close()
            raise

    def call(self, coroutine, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        try:
            if self.connection is not None:
                self.call(self.connection.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


# --- 1. zero configuration -------------------------------------------------------------------------


def test_runs_with_no_configuration_in_an_empty_directory_and_stops_cleanly_on_sigterm_and_sigint(
    start_server, tmp_path
):
    by_signal = {signal.SIGTERM: tmp_path / "term", signal.SIGINT: tmp_path / "int"}
    servers = {signum: start_server(cwd=cwd) for signum, cwd in by_signal.items()}
    for signum, server in servers.items():
        server.wait_ready()
        assert (by_signal[signum] / "var" / "app.db").is_file()
        assert json_of(server.get("/health/ready")) == {"status": "ready", "revision": "0002"}
        assert_serves_rows(server)
    for signum, server in servers.items():
        server.process.send_signal(signum)
    for signum, server in servers.items():
        assert wait_exit_within(server, 15) == 0, (signum, server.log)
        assert "shutting down" in server.log
        assert error_lines(server.log) == [] and "Traceback" not in server.log, server.log


# --- 2. shutdown drains in-flight requests -----------------------------------------------------------


@pytest.mark.postgres
def test_sigterm_lets_an_in_flight_request_finish(start_server, postgres_url):
    server = start_server(DATABASE_URL=postgres_url)
    server.wait_ready()
    row = post_row(server, "in flight")
    holder = HeldConnection(postgres_url)
    transaction = holder.connection.transaction()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    released = False
    try:
        holder.call(transaction.start())
        holder.call(holder.connection.execute("LOCK TABLE my_table IN ACCESS EXCLUSIVE MODE"))
        pending_get = pool.submit(server.get, "/", 30)
        blocked = "SELECT count(*) FROM pg_locks WHERE relation = 'my_table'::regclass AND NOT granted"
        wait_for(lambda: holder.call(holder.connection.fetchval(blocked)) > 0, 10, "GET / never blocked on the lock")

        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "shutting down" in server.log, 10, "server did not start shutting down")
        time.sleep(0.5)
        assert server.process.poll() is None, f"exited with a request in flight:\n{server.log}"
        assert not pending_get.done()

        holder.call(transaction.rollback())
        released = True
        response = pending_get.result(15)
        assert response[0] == 200, response
        assert json_of(response) == {"items": [row], "next": row["id"]}
        assert wait_exit_within(server, 15) == 0, server.log
    finally:
        if not released:
            with contextlib.suppress(Exception):
                holder.call(transaction.rollback())
        holder.close()
        pool.shutdown(wait=True)


KEEP_ALIVE_CLIENTS = 32


class KeepAlivePoster(threading.Thread):
    """One client posting rows over one persistent connection until the server closes it."""

    def __init__(self, port: int, index: int):
        super().__init__(name=f"poster-{index}", daemon=True)
        self.port, self.index = port, index
        self.answered: dict[str, int] = {}  # name -> status of every request that got an answer
        self.closing_answers = 0  # answers that carried Connection: close

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            for number in itertools.count():
                name = f"client {self.index} row {number}"
                try:
                    connection.request("POST", "/", json.dumps({"name": name}), {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    return  # closed by the server before it read this request (or while idle)
                self.answered[name] = response.status
                if response.getheader("Connection", "").lower() == "close":
                    self.closing_answers += 1
                    return
        finally:
            connection.close()


def test_sigterm_under_keep_alive_traffic_exits_0_in_time_and_every_committed_row_was_answered(
    start_server, database_url
):
    server = start_server(DATABASE_URL=database_url)
    server.wait_ready()
    posters = [KeepAlivePoster(server.port, index) for index in range(KEEP_ALIVE_CLIENTS)]
    for poster in posters:
        poster.start()
    wait_for(lambda: all(poster.answered for poster in posters), 30, "every client had an answer")

    server.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = server.wait_exit(10)
    took = time.monotonic() - started
    for poster in posters:
        poster.join(10)
        assert not poster.is_alive(), f"{poster.name} still waiting"
    print(f"exit {code} {took:.2f} s after SIGTERM under {KEEP_ALIVE_CLIENTS} keep-alive clients")
    assert code == 0, server.log
    assert "Traceback" not in server.log, server.log

    created = {name for poster in posters for name, status in poster.answered.items() if status == 201}
    rows = {name for (name,) in query(database_url, "SELECT name FROM my_table")}
    assert rows == created, (sorted(rows - created), sorted(created - rows))
    assert sum(poster.closing_answers for poster in posters) > 0  # in-flight answers said Connection: close


# --- 3. live while migrating ------------------------------------------------------------------------


def test_live_answers_quickly_and_data_waits_while_a_slow_revision_runs(start_server, extra_revisions, database_url):
    ini, add = extra_revisions
    add("0003", "0002", "time.sleep(4)")
    server = start_server(DATABASE_URL=database_url, ALEMBIC_CONFIG=str(ini))
    server.wait_listening()
    started = time.monotonic()
    live_latencies, data_responses = [], []
    ready = None
    while time.monotonic() - started < 30:
        before = time.monotonic()
        live = server.get("/health/live", timeout=2)
        live_latencies.append(time.monotonic() - before)
        assert live[0] == 200, live
        # The data request first: when the readiness after it still says migrating, it was made while migrating.
        data = server.get("/")
        response = server.get("/health/ready")
        if response[0] == 200:
            ready = json_of(response)
            break
        assert response[0] == 503 and json_of(response) == {"status": "migrating"}, response
        data_responses.append(data)
        time.sleep(0.05)
    migrating_for = time.monotonic() - started

    assert ready == {"status": "ready", "revision": "0003"}, server.log
    assert migrating_for > 3.5, f"ready after {migrating_for:.2f} s: the slow revision did not run?\n{server.log}"
    assert len(live_latencies) >= 20
    assert max(live_latencies) < 0.1, sorted(live_latencies)[-5:]
    assert data_responses
    for status, body, headers in data_responses:
        assert status == 503, (status, body)
        assert headers.get("Retry-After"), dict(headers)
        assert "error" in json.loads(body)
    assert "applied revision 0003" in server.log
    assert server.stop() == 0, server.log


# --- 4. a failing revision --------------------------------------------------------------------------


def test_a_failing_revision_exits_1_with_one_line_and_leaves_the_last_good_revision(
    start_server, extra_revisions, database_url
):
    ini, add = extra_revisions
    # One line: conftest's add() mis-indents a body of several lines.
    add(
        "0003",
        "0002",
        'op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True)); raise RuntimeError("boom")',
    )
    server = start_server(DATABASE_URL=database_url, ALEMBIC_CONFIG=str(ini), DB_WAIT=5)
    assert wait_exit_within(server, 30) == 1, server.log
    assert_one_clear_error(server, "0003", "boom")
    assert versions(database_url) == ["0002"]
    assert "half_done" not in table_names(database_url)
    assert "my_table" in table_names(database_url)


# --- 5. data survives the upgrade -------------------------------------------------------------------


def test_rows_written_at_the_first_revision_survive_the_automatic_upgrade(start_server, tmp_path, database_url):
    done = run_alembic("upgrade", "0001", cwd=tmp_path, DATABASE_URL=database_url)
    assert done.returncode == 0, done.stderr
    assert versions(database_url) == ["0001"]
    expected = []
    for name in AWKWARD_NAMES:
        if is_sqlite(database_url):
            with contextlib.closing(sqlite3.connect(sqlite_path(database_url))) as connection:
                row_id = connection.execute("INSERT INTO my_table (name) VALUES (?)", (name,)).lastrowid
                connection.commit()
        else:
            row_id = query(database_url, "INSERT INTO my_table (name) VALUES ($1) RETURNING id", name)[0][0]
        expected.append((row_id, name))

    server = start_server(DATABASE_URL=database_url)
    server.wait_ready()
    assert "applied revision 0002" in server.log
    assert "applied revision 0001" not in server.log
    items = json_of(server.get("/?limit=1000"))["items"]
    assert [(item["id"], item["name"]) for item in items] == expected
    for item in items:
        assert set(item) == {"id", "name", "created_at"}
        assert datetime.datetime.fromisoformat(item["created_at"]).tzinfo is not None, item
    new = post_row(server, "after the upgrade")
    assert new["id"] > max(row_id for row_id, _ in expected)
    assert server.stop() == 0, server.log


# --- 6. modes -------------------------------------------------------------------------------------


def test_check_on_a_fresh_database_exits_3_and_creates_nothing(start_server, tmp_path, database_url):
    empty = tmp_path / "empty"
    servers = [start_server("--migrate=check", DATABASE_URL=database_url, cwd=empty)]
    if is_sqlite(database_url):
        servers.append(start_server(cwd=tmp_path / "default", MIGRATE="check"))  # the default var/app.db
    for server in servers:
        assert wait_exit_within(server, 20) == 3, server.log
        assert "listening" not in server.log
        assert "pending: 0001 (create my_table), 0002 (add my_table.created_at)" in server.log
        assert error_lines(server.log) == [], server.log
        assert [path.name for path in server.cwd.iterdir()] == [server.log_path.name]
    if is_sqlite(database_url):
        assert not (tmp_path / "db").exists()  # the fixture's path: tmp_path/db/app.db
    else:
        assert "alembic_version" not in table_names(database_url)


def test_check_at_head_exits_0(start_server, database_url):
    upgrade_in_process(database_url)
    server = start_server("--migrate=check", DATABASE_URL=database_url)
    assert wait_exit_within(server, 20) == 0, server.log
    assert "database is at head (0002)" in server.log
    assert "listening" not in server.log


def test_check_reads_an_sqlite_file_whose_path_has_uri_characters_and_changes_nothing(start_server, tmp_path):
    """The check opens the file read-only through an SQLite URI: a '#' or '?' in the path must not end the
    file's name there (it did: SQLite created an empty file by the shorter name, and the check said base)."""
    directory = tmp_path / "data #1 ?100%"
    url = f"sqlite:///{urllib.parse.quote(str(directory / 'app.db'))}"
    upgrade_in_process(url)
    server = start_server("--migrate=check", DATABASE_URL=url, cwd=tmp_path / "run")
    assert wait_exit_within(server, 20) == 0, server.log
    assert "database is at head (0002)" in server.log
    # No file made beside it, apart from a reader's WAL index, which SQLite keeps beside any WAL database.
    made = {p.name for p in tmp_path.iterdir()} - {"data #1 ?100%", "run"}
    assert made == set() and {p.name for p in directory.iterdir()} <= {
        "app.db",
        "app.db.migration-lock",
        "app.db-wal",
        "app.db-shm",
    }


def test_only_upgrades_and_exits_0_without_listening(start_server, database_url):
    server = start_server(DATABASE_URL=database_url, MIGRATE="only")
    assert wait_exit_within(server, 30) == 0, server.log
    assert "listening" not in server.log
    assert "upgraded to 0002" in server.log
    assert versions(database_url) == ["0002"]
    assert query(database_url, "SELECT count(*) FROM my_table") == [(0,)]


def test_a_revision_this_build_does_not_know_exits_1_in_check_and_auto(start_server, tmp_path, database_url):
    upgrade_in_process(database_url)
    query(database_url, "INSERT INTO alembic_version (version_num) VALUES ('zzzz')")
    check = start_server("--migrate=check", DATABASE_URL=database_url, DB_WAIT=2, cwd=tmp_path / "check")
    auto = start_server("--migrate=auto", DATABASE_URL=database_url, DB_WAIT=2, cwd=tmp_path / "auto")
    for server in (check, auto):
        assert wait_exit_within(server, 20) == 1, server.log
        assert_one_clear_error(server, "zzzz", "does not know")
    assert versions(database_url) == ["0002", "zzzz"]


@pytest.mark.postgres
def test_off_waits_for_a_manual_upgrade_then_becomes_ready_by_itself(start_server, tmp_path, postgres_url):
    server = start_server("--migrate=off", DATABASE_URL=postgres_url, DB_WAIT=2)
    server.wait_listening()
    wait_for(lambda: server.get("/health/ready")[0] == 503, 5, "never answered 503")
    time.sleep(1.5)  # longer than one poll: it must not migrate on its own
    response = server.get("/health/ready")
    assert response[0] == 503 and json_of(response) == {"status": "waiting"}, response
    status, body, headers = server.get("/")
    assert status == 503 and headers.get("Retry-After"), (status, body)
    assert "my_table" not in table_names(postgres_url)

    done = run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=postgres_url)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: server.get("/health/ready")[0] == 200, 5, f"not ready after the manual upgrade:\n{server.log}")
    assert json_of(server.get("/health/ready")) == {"status": "ready", "revision": "0002"}
    assert_serves_rows(server)
    assert "applied revision" not in server.log and "Running upgrade" not in server.log
    assert server.stop() == 0, server.log


# --- 7. unreachable database ------------------------------------------------------------------------


def test_an_unreachable_database_exits_1_naming_host_and_port_but_never_the_password(start_server, tmp_path):
    url = "postgresql://user:s3cretpw@127.0.0.1:1/x"
    servers = [
        start_server(*flags, DATABASE_URL=url, DB_WAIT=1, cwd=tmp_path / name)
        for name, flags in (("auto", ()), ("check", ("--migrate=check",)), ("only", ("--migrate=only",)))
    ]
    for server in servers:
        assert wait_exit_within(server, 20) == 1, server.log
        assert_one_clear_error(server, "127.0.0.1:1")
        assert "s3cretpw" not in server.log
        assert server.log_path.read_bytes().count(b"s3cretpw") == 0


# --- 8. settings -------------------------------------------------------------------------------------


def test_bad_settings_exit_1_with_one_clear_line(start_server, tmp_path):
    cases = [
        (("--port=abc",), {}, "--port"),
        (("--migrate=sometimes",), {}, "sometimes"),
        (("--database-url=mysql://x/y",), {}, "mysql"),
        (("--nope=1",), {}, "--nope"),
        ((), {"PORT": "abc"}, "PORT"),
        ((), {"MIGRATE": "sometimes"}, "sometimes"),
    ]
    servers = [
        (start_server(*flags, cwd=tmp_path / f"case{i}", **environ), word)
        for i, (flags, environ, word) in enumerate(cases)
    ]
    for server, word in servers:
        assert wait_exit_within(server, 20) == 1, server.log
        assert_one_clear_error(server, "bad settings", word)
        assert "listening" not in server.log
        assert not (server.cwd / "var").exists()


def test_a_flag_beats_the_environment_and_the_environment_beats_the_default(start_server, tmp_path):
    flagged = start_server(
        "--migrate=auto",
        f"--database-url=sqlite:///{tmp_path / 'flag.db'}",
        cwd=tmp_path / "flagged",
        MIGRATE="sometimes",
        PORT="1",
        DATABASE_URL="mysql://x/y",
    )
    from_env = start_server(cwd=tmp_path / "from_env", MIGRATE="only", DATABASE_URL=f"sqlite:///{tmp_path / 'env.db'}")
    flagged.wait_ready()
    assert flagged.port not in (1, 8888)
    assert (tmp_path / "flag.db").is_file()
    assert not (flagged.cwd / "var").exists()
    assert wait_exit_within(from_env, 20) == 0, from_env.log
    assert "listening" not in from_env.log
    assert versions(f"sqlite:///{tmp_path / 'env.db'}") == ["0002"]
    assert flagged.stop() == 0, flagged.log


# --- 9. nothing to do ------------------------------------------------------------------------------


def test_a_server_started_after_a_manual_upgrade_finds_nothing_to_do(start_server, tmp_path, database_url):
    done = run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=database_url)
    assert done.returncode == 0, done.stderr
    server = start_server(DATABASE_URL=database_url)
    server.wait_ready()
    assert "database already at head (0002)" in server.log
    for applied in ("Running upgrade", "applied revision", "upgraded to", "migration lock"):
        assert applied not in server.log, server.log
    assert versions(database_url) == ["0002"]
    assert server.stop() == 0, server.log


# --- 9b. the admin upgrade on a serving process ---------------------------------------------------

ADMIN_TOKEN = "serving-admin-token"


def serving_at_0002(start_server, database_url: str, ini, tmp_path):
    """A server brought to its head, and then the database taken back to 0002 by hand while it serves."""
    server = start_server(f"--admin-token={ADMIN_TOKEN}", DATABASE_URL=database_url, ALEMBIC_CONFIG=str(ini))
    server.wait_ready()
    down = run_alembic("downgrade", "0002", cwd=tmp_path, DATABASE_URL=database_url, ALEMBIC_CONFIG=str(ini))
    assert down.returncode == 0 and versions(database_url) == ["0002"], down.stderr
    return server


def admin_upgrade(server) -> tuple:
    return server.request(
        "POST", "/admin/migrations/upgrade", b"", {"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
    )


def test_the_admin_upgrade_runs_on_a_server_that_is_already_serving(
    start_server, database_url, extra_revisions, tmp_path
):
    """The end of the start must not stop the runner the admin endpoint shares: a serving process answered
    every upgrade 503 'stopped on request before revision …' (the stop flag was set once startup was done)."""
    ini, add = extra_revisions
    add(
        "0003",
        "0002",
        'op.add_column("my_table", sa.Column("note", sa.String(20)))',
        'op.drop_column("my_table", "note")',
    )
    server = serving_at_0002(start_server, database_url, ini, tmp_path)

    status, body, _ = admin_upgrade(server)
    assert status == 200, body
    assert [revision["id"] for revision in json.loads(body)["applied"]] == ["0003"]
    assert versions(database_url) == ["0003"]
    assert server.get("/")[0] == 200
    assert server.stop() == 0, server.log


def test_sigterm_during_the_admin_upgrade_of_a_serving_process_stops_it_between_revisions(
    start_server, database_url, extra_revisions, tmp_path
):
    """Shutdown still stops the shared runner: the revision running finishes, the next never starts, the
    request gets its 503 and the process exits 0."""
    ini, add = extra_revisions
    slow_one = 'op.create_table("slow_one", sa.Column("id", sa.Integer, primary_key=True)); time.sleep(2)'
    add("0003", "0002", slow_one, 'op.drop_table("slow_one")')
    add("0004", "0003", 'op.create_table("two", sa.Column("id", sa.Integer, primary_key=True))', 'op.drop_table("two")')
    server = serving_at_0002(start_server, database_url, ini, tmp_path)
    runs_before = server.log.count("Running upgrade 0002 -> 0003")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(admin_upgrade, server)
        wait_for(lambda: server.log.count("Running upgrade 0002 -> 0003") > runs_before, 20, "0003 never ran again")
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        status, body, _ = answer.result(timeout=30)

    assert wait_exit_within(server, 20) == 0, server.log
    assert status == 503 and json.loads(body) == {"error": "stopped on request before revision 0004"}, body
    assert versions(database_url) == ["0003"]
    assert "slow_one" in table_names(database_url) and "two" not in table_names(database_url)


# --- 10. stopping while a revision runs ------------------------------------------------------------


def test_sigterm_while_revisions_run_exits_0_and_the_log_matches_the_database(
    start_server, extra_revisions, database_url
):
    ini, add = extra_revisions
    add("0003", "0002", 'op.create_table("slow_one", sa.Column("id", sa.Integer, primary_key=True)); time.sleep(2)')
    add("0004", "0003", 'op.create_table("slow_two", sa.Column("id", sa.Integer, primary_key=True)); time.sleep(2)')
    server = start_server(DATABASE_URL=database_url, ALEMBIC_CONFIG=str(ini))
    wait_for(lambda: "Running upgrade 0002 -> 0003" in server.log, 20, f"0003 never started:\n{server.log}")
    time.sleep(0.5)
    server.process.send_signal(signal.SIGTERM)
    assert wait_exit_within(server, 20) == 0, server.log
    assert error_lines(server.log) == [] and "Traceback" not in server.log, server.log
    # The revision that was running finished (or rolled back), and the next one never started.
    assert "Running upgrade 0003 -> 0004" not in server.log, server.log
    assert "slow_two" not in table_names(database_url)
    at = versions(database_url)
    assert at in (["0002"], ["0003"])
    assert ("slow_one" in table_names(database_url)) == (at == ["0003"])
    # What the log says was applied is what the database holds.
    assert ("applied revision 0003" in server.log) == (at == ["0003"]), f"database at {at}, log:\n{server.log}"


def test_a_start_at_head_never_loads_alembic_the_lint_the_backup_or_another_driver(
    start_server, tmp_path, database_url
):
    """The features that guard an upgrade cost nothing when there is none: a start at head is one query.
    (PYTHONPROFILEIMPORTTIME makes Python log every module it imports.)"""
    upgrade_in_process(database_url)
    server = start_server(DATABASE_URL=database_url, PYTHONPROFILEIMPORTTIME="1")
    server.wait_ready()
    assert server.stop() == 0, server.log
    imported = {line.rsplit("|", 1)[1].strip() for line in server.log.splitlines() if line.startswith("import time:")}
    assert "server.web.app" in imported  # the log holds the imports
    loaded = sorted(m for m in imported if m.split(".")[0] in ("alembic", "pglast") or "migrations.lint" in m)
    assert not loaded and "server.migrations.backup" not in imported, loaded
    assert "database already at head (0002)" in server.log
    # Nor does a server on SQLite load PostgreSQL's driver (web/queries.py compiles for it on first use).
    assert ("asyncpg" in imported) == (not is_sqlite(database_url))
