"""Fixtures: real SQLite files, fresh PostgreSQL databases, real server processes."""

import asyncio
import concurrent.futures
import contextlib
import datetime
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from server.db import make_serving_engine, make_session_factory
from server.errors import Phase
from server.migrations import Migrator
from server.migrations.upgrade import locked_session
from server.settings import ENVIRONMENT_VARIABLES, ROOT, load_settings
from server.web.app import make_app
from server.web.state import ServiceState

TEST_POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES") == "1"


def in_thread(fn, *args):
    """Run blocking or asyncio.run-ing code off the test's thread, as the server does.

    asyncio.run on this thread would replace (and then unset) the event loop pytest-tornado's tests use.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def run_async(coroutine_function, *args):
    return in_thread(lambda: asyncio.run(coroutine_function(*args)))


@pytest.fixture
def io_loop():
    """pytest-tornado's io_loop calls the deprecated make_current: an IOLoop of our own instead."""
    loop = IOLoop(make_current=False)
    asyncio.set_event_loop(loop.asyncio_loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close(all_fds=True)


# --- databases -------------------------------------------------------------------------------------


def _admin_dsn() -> str:
    return TEST_POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server's admin URL; skips (or, with REQUIRE_POSTGRES=1, fails) when unreachable."""

    async def probe():
        connection = await asyncpg.connect(_admin_dsn(), timeout=5)
        await connection.close()

    try:
        run_async(probe)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL not reachable at {TEST_POSTGRES_URL} ({type(exc).__name__}: {exc})"
        if REQUIRE_POSTGRES:
            pytest.fail(f"{reason}, and REQUIRE_POSTGRES=1", pytrace=False)
        pytest.skip(reason)
    return _admin_dsn()


@pytest.fixture
def postgres_url(new_postgres_url) -> str:
    """A fresh, empty PostgreSQL database for this test alone, dropped afterwards."""
    return new_postgres_url()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'db' / 'app.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request) -> str:
    """Each test using it runs twice: on a fresh SQLite file and on a fresh PostgreSQL database."""
    return request.getfixturevalue(f"{request.param}_url")


def make_settings(database_url: str, *flags: str):
    return load_settings([f"--database-url={database_url}", "--db-wait=5", *flags], environ={})


@pytest.fixture
def migrated_url(database_url) -> str:
    """database_url, brought to head through the server's own migrator."""
    in_thread(Migrator(make_settings(database_url)).upgrade)
    return database_url


# --- the app in-process, for pytest-tornado's http_client -------------------------------------------


@pytest.fixture
def state() -> ServiceState:
    return ServiceState(Phase.READY)


@pytest.fixture
def engine(io_loop, migrated_url):
    """An engine bound to this test's loop (never shared across loops), disposed on it."""
    engine = make_serving_engine(make_settings(migrated_url))
    yield engine
    io_loop.run_sync(engine.dispose)


@pytest.fixture
def app(engine, state, migrated_url):
    return make_app(make_session_factory(engine, make_settings(migrated_url)), state)


@pytest.fixture
def http_server(io_loop, app, _unused_port):
    """pytest-tornado's, but taking `app` as a parameter: it looks it up by name at run time, which
    hides a parametrized database_url from collection."""
    server = HTTPServer(app)
    server.add_socket(_unused_port[0])
    yield server
    server.stop()
    io_loop.run_sync(server.close_all_connections, timeout=10)


# --- alembic configurations with extra revisions -----------------------------------------------------


@pytest.fixture
def extra_revisions(tmp_path):
    """An alembic.ini whose history is ours plus revisions a test writes: returns (ini_path, add)."""
    versions = tmp_path / "extra_versions"
    versions.mkdir()
    ini = tmp_path / "alembic.ini"
    text = (ROOT / "alembic.ini").read_text()
    text = text.replace(
        "script_location = %(here)s/alembic",
        f"script_location = {ROOT / 'alembic'}\nversion_locations = {ROOT / 'alembic' / 'versions'}"
        f"{os.pathsep}{versions}",
    ).replace("prepend_sys_path = %(here)s", f"prepend_sys_path = {ROOT}")
    ini.write_text(text)

    def add(revision: str, down_revision: str, upgrade: str, downgrade: str = "pass", imports: str = ""):
        def block(code: str) -> str:
            return textwrap.indent(textwrap.dedent(code).strip(), "    ")

        source = [
            f'"""{revision} (test revision)"""',
            "import time as real_time",
            "import types",
            "",
            "import sqlalchemy as sa",
            "from alembic import op",
            "from server.migrations.lint import is_linting",
            imports,
            "",
            "",
            "",
            "def _sleep(seconds):",
            "    if not is_linting():  # a test revision is slow when it runs, not while the lint records it",
            "        real_time.sleep(seconds)",
            "",
            "",
            'time = types.SimpleNamespace(**{**vars(real_time), "sleep": _sleep})',
            "",
            f"revision = {revision!r}",
            f"down_revision = {down_revision!r}",
            "branch_labels = None",
            "depends_on = None",
            "",
            "",
            "def upgrade():",
            block(upgrade),
            "",
            "",
            "def downgrade():",
            block(downgrade),
            "",
        ]
        (versions / f"{revision}.py").write_text("\n".join(source))

    return ini, add


# --- real server processes ---------------------------------------------------------------------------


class ServerProcess:
    """`python run.py` in a directory of its own, its log in a file."""

    def __init__(self, cwd: Path, args, env, open_files: int | None = None):
        self.cwd = cwd
        self.log_path = cwd / f"server-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - the process writes to it until kill()
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), *args],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # open_files: the server's soft and hard RLIMIT_NOFILE, as `ulimit -n` would set them
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files)))
            if open_files
            else None,
        )
        self.port = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"listening on http://[^:]+:(\d+)", self.log)
            if match:
                self.port = int(match.group(1))
                return self.port
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode} before listening:\n{self.log}")
            time.sleep(0.02)
        raise AssertionError(f"server did not listen within {timeout} s:\n{self.log}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port or self.wait_listening()}{path}"

    def get(self, path: str, timeout: float = 5):
        """(status, body bytes, headers) of a GET, 4xx/5xx included."""
        return self.request("GET", path, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, headers=None, timeout: float = 5):
        request = urllib.request.Request(self.url(path), data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read(), error.headers

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        self.wait_listening(timeout)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode} before ready:\n{self.log}")
            try:
                if self.get("/health/ready", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready within {timeout} s:\n{self.log}")

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server did not exit within {timeout} s:\n{self.log}") from None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


def clean_environ(**overrides) -> dict:
    """The test's environment minus anything that would change the server's settings."""
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT_VARIABLES}
    env.update({k: str(v) for k, v in overrides.items()})
    return env


@pytest.fixture
def start_server(tmp_path):
    """start_server(*flags, cwd=None, open_files=None, **environment) -> ServerProcess; every one is killed
    at teardown."""
    started: list[ServerProcess] = []

    def start(*args: str, cwd: Path | None = None, open_files: int | None = None, **environ) -> ServerProcess:
        workdir = cwd or tmp_path
        workdir.mkdir(parents=True, exist_ok=True)
        server = ServerProcess(workdir, ["--port=0", *args], clean_environ(**environ), open_files)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def run_alembic(*args: str, cwd: Path, timeout: float = 60, **environ) -> subprocess.CompletedProcess:
    """`alembic ARGS` as a user runs it: a subprocess, with the repository's alembic.ini unless told."""
    environ.setdefault("ALEMBIC_CONFIG", str(ROOT / "alembic.ini"))
    return run_module("alembic", *args, cwd=cwd, timeout=timeout, **environ)


def run_backup(*args: str, cwd: Path, timeout: float = 60, **environ) -> subprocess.CompletedProcess:
    """`python -m server.backup ARGS` as a user runs it: a subprocess in cwd, settings from environ."""
    return subprocess.run(
        [sys.executable, "-m", "server.backup", *args],
        cwd=cwd,
        env=clean_environ(PYTHONPATH=str(ROOT), **environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def pg_dump_tools() -> None:
    """pg_dump and pg_restore on PATH; skips without them (fails in CI, where .ci/run installs them)."""
    missing = [tool for tool in ("pg_dump", "pg_restore", "psql") if shutil.which(tool) is None]
    if missing:
        reason = f"{' and '.join(missing)} not on PATH (apt-get install postgresql-client)"
        if REQUIRE_POSTGRES or os.environ.get("CI") == "true":
            pytest.fail(f"{reason}, and this is CI", pytrace=False)
        pytest.skip(reason)


# --- reading a database beside the server ------------------------------------------------------------


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path:
    return Path(make_url(url).database)


def query(url: str, sql: str, *params) -> list[tuple]:
    """Rows of one statement run straight through the driver (committed); never creates an SQLite file.

    Parameters are `?` on SQLite and `$1` on PostgreSQL."""
    if is_sqlite(url):
        assert sqlite_path(url).exists(), f"no SQLite file at {sqlite_path(url)}"
        with contextlib.closing(sqlite3.connect(sqlite_path(url), timeout=30)) as connection:
            rows = connection.execute(sql, params).fetchall()
            connection.commit()
            return [tuple(row) for row in rows]

    return [tuple(row) for row in pg_run(url, lambda connection: connection.fetch(sql, *params))]


def versions(url: str) -> list[str]:
    return sorted(row[0] for row in query(url, "SELECT version_num FROM alembic_version"))


def table_names(url: str) -> set[str]:
    if is_sqlite(url):
        return {name for (name,) in query(url, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {name for (name,) in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def column_names(url: str, table: str) -> list[str]:
    if is_sqlite(url):
        return [row[1] for row in query(url, f"PRAGMA table_info({table})")]
    sql = (
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position"
    )
    return [name for (name,) in query(url, sql, table)]


def upgrade_in_process(url: str) -> None:
    in_thread(Migrator(make_settings(url)).upgrade)


# --- waiting, logs, responses ------------------------------------------------------------------------


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """predicate's first true value, polled until timeout; else an AssertionError naming what."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
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


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR " in line]


def assert_clean(log: str) -> None:
    assert "Traceback" not in log, log
    assert not error_lines(log), log


def assert_one_clear_error(server_or_output, *words: str) -> str:
    """Exactly one ERROR line, naming each of words, and no traceback anywhere (a server's log, or text)."""
    log = getattr(server_or_output, "log", server_or_output)
    errors = error_lines(log)
    assert len(errors) == 1, log
    for word in words:
        assert word in errors[0], log
    assert "Traceback" not in log, log
    return errors[0]


def json_of(response) -> object:
    status, body, headers = response
    assert headers.get("Content-Type", "").startswith("application/json"), (status, body, dict(headers))
    return json.loads(body)


def is_alive(pid: int) -> bool:
    """The process runs: a zombie (dead, not yet reaped by whoever adopted it) does not count."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    return True


# --- holding things other processes wait for -----------------------------------------------------------


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


def table_lock_of(url: str, mode: str = "ACCESS SHARE"):
    """A transaction holding my_table in `mode`: ACCESS SHARE as a long report would, ACCESS EXCLUSIVE as a
    revision rewriting the table would."""

    @contextlib.asynccontextmanager
    async def hold():
        connection = await asyncpg.connect(url, timeout=10)
        try:
            async with connection.transaction():
                await connection.execute(f"LOCK TABLE my_table IN {mode} MODE")
                yield
        finally:
            await connection.close()

    return hold


def migration_lock_held(url: str, label: str = "test holder"):
    """Hold url's migration lock as another migrator would (this pid, the label), until the block ends."""
    return held_in_thread(lambda: locked_session(make_settings(url), label=label))


def holder_name(url: str, label: str, pid: int) -> str:
    """How a waiter names the migrator holding the lock: its PostgreSQL application name, or the lock file."""
    if not is_sqlite(url):
        return f"({f'{label} on {socket.gethostname()} pid {pid}'[:63]})"
    return f"pid {pid} on {socket.gethostname()}"


# --- write load ----------------------------------------------------------------------------------------


class Writers:
    """Clients POSTing rows to a server from threads of their own, one connection a request, until
    stopped (or limit seconds pass): their answers, by status."""

    def __init__(self, server, clients: int, limit: float = 60.0):
        self.server, self.limit = server, limit
        self.statuses: dict[int | str, int] = {}
        self.lock, self.stopped = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self.write, args=(i,), daemon=True) for i in range(clients)]

    def write(self, client: int) -> None:
        deadline = time.monotonic() + self.limit
        sent = 0
        while not self.stopped.is_set() and time.monotonic() < deadline:
            body = json.dumps({"name": f"client {client} row {sent}"}).encode()
            try:
                status = self.server.request("POST", "/", body, {"Content-Type": "application/json"}, timeout=60)[0]
            except OSError as exc:  # a refused or reset connection counts as an answer of its own
                status = type(exc).__name__
            sent += 1
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1

    def __enter__(self) -> "Writers":
        for thread in self.threads:
            thread.start()
        wait_for(lambda: sum(self.statuses.values()) >= len(self.threads), 30, "the writers' first answers")
        return self

    def __exit__(self, *_) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(self.limit + 70)
        assert not any(thread.is_alive() for thread in self.threads), "a writer did not stop"

    @property
    def created(self) -> int:
        return self.statuses.get(201, 0)


# --- databases to move data between: python -m server.transfer -----------------------------------------


@pytest.fixture
def new_postgres_url(postgres_server):
    """new_postgres_url() -> the URL of a fresh, empty PostgreSQL database; all dropped afterwards."""
    names: list[str] = []

    def create() -> str:
        names.append(f"tm_{uuid.uuid4().hex[:12]}")
        pg_execute(postgres_server, f'CREATE DATABASE "{names[-1]}"')
        return make_url(postgres_server).set(database=names[-1]).render_as_string(hide_password=False)

    yield create
    for name in names:
        pg_execute(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_module(module: str, *args: str, cwd: Path, timeout: float, **environ) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` as a user runs it, to the end: a subprocess with a clean environment."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=clean_environ(**environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def pg_run(url: str, work):
    """await work(connection) on a connection of its own to `url`, off the test's thread."""

    async def run():
        connection = await asyncpg.connect(url, timeout=10)
        try:
            return await work(connection)
        finally:
            await connection.close()

    return run_async(run)


def pg_execute(url: str, sql: str, *args) -> None:
    """A statement without results (or several at once, without arguments)."""
    pg_run(url, lambda connection: connection.execute(sql, *args))


def pg_execute_many(url: str, sql: str, rows) -> None:
    rows = list(rows)
    pg_run(url, lambda connection: connection.executemany(sql, rows))


def transfer(source: str, target: str, *flags: str, timeout: float = 120, **environ) -> subprocess.CompletedProcess:
    """The transfer as a user runs it, to the end."""
    return run_module("server.transfer", source, target, *flags, cwd=ROOT, timeout=timeout, **environ)


def start_transfer(source: str, target: str, log: Path, *flags: str, **environ) -> subprocess.Popen:
    """The transfer in the background, its output in `log`: the caller kills it in a finally."""
    with open(log, "wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "server.transfer", source, target, *flags],
            cwd=ROOT,
            env=clean_environ(**environ),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop_process(process: subprocess.Popen) -> None:
    """For a finally: whatever state it is in, it is gone afterwards."""
    if process.poll() is None:
        process.kill()
    process.wait(10)


def make_source(url: str, rows=(), revision: str | None = None, *flags: str) -> None:
    """A database at head (or, SQLite only, at `revision` through alembic) holding rows of my_table:
    (id, name, created_at) with created_at as SQLite text or, for PostgreSQL, a datetime."""
    if make_url(url).get_backend_name() == "postgresql":
        in_thread(Migrator(make_settings(url, *flags)).upgrade)
        # As text: asyncpg would send datetime.min and .max (0001-01-01, 9999-12-31 23:59:59.999999) as infinity.
        rows = ((i, name, moment.isoformat()) for i, name, moment in rows)
        pg_execute_many(url, "INSERT INTO my_table (id, name, created_at) VALUES ($1, $2, $3::text::timestamptz)", rows)
        return
    path = Path(make_url(url).database)
    path.parent.mkdir(parents=True, exist_ok=True)
    if revision is None:
        in_thread(Migrator(make_settings(url, *flags)).upgrade)
    else:
        result = run_alembic("upgrade", revision, cwd=path.parent.parent, DATABASE_URL=url)
        assert result.returncode == 0, result.stderr
    columns = "(id, name, created_at)" if revision is None else "(id, name)"
    marks = "(?, ?, ?)" if revision is None else "(?, ?)"
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.executemany(f"INSERT INTO my_table {columns} VALUES {marks}", rows)


def stored_rows(url: str) -> list[tuple]:
    """my_table's rows in id order, created_at as an aware UTC datetime on either dialect."""
    sql = "SELECT id, name, created_at FROM my_table ORDER BY id"
    if make_url(url).get_backend_name() == "postgresql":
        return query(url, sql)
    with contextlib.closing(sqlite3.connect(make_url(url).database)) as connection:
        rows = connection.execute(sql).fetchall()
    return [(i, name, _moment(text)) for i, name, text in rows]


def _moment(text: str) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(text)
    return moment.replace(tzinfo=datetime.UTC) if moment.tzinfo is None else moment.astimezone(datetime.UTC)


# Text no copy may change: quotes, backslashes, COPY's escapes, control characters, other scripts, the
# astral plane, 50 characters (the column's limit) in one, two and four bytes each.
AWKWARD_NAMES = (
    "plain",
    "日本語のテキスト",
    "emoji 😀🎉🚀 and 👩‍👩‍👧",
    "中文 한국어 ελληνικά עברית",
    "it's a \"quote\" and a 'quote'",
    "back\\slash \\N \\\\ and \\t",
    "tab\there, newline\nhere, return\rhere",
    "bell \a backspace \b formfeed \f vtab \v esc \x1b",
    "unit\x1fseparator",  # the character the reader joins values with
    "x" * 50,
    "é" * 50,
    "🎉" * 50,
    "",
    " leading and trailing ",
)


# SQLite text as the server, SQLAlchemy and other writers leave it, and the moment each one means.
AWKWARD_MOMENTS = (
    ("2026-11-21 00:22:53", datetime.datetime(2026, 11, 21, 0, 22, 53, tzinfo=datetime.UTC)),  # CURRENT_TIMESTAMP
    ("2026-11-21 00:22:53.000001", datetime.datetime(2026, 11, 21, 0, 22, 53, 1, tzinfo=datetime.UTC)),  # SQLAlchemy
    ("1970-01-01 00:00:00.500000", datetime.datetime(1970, 1, 1, 0, 0, 0, 500000, tzinfo=datetime.UTC)),
    ("1999-12-31 23:59:59.999999", datetime.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=datetime.UTC)),
    ("0001-01-01 00:00:00", datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)),
    ("9999-12-31 23:59:59.999999", datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=datetime.UTC)),
    ("2026-11-21T02:22:53+02:00", datetime.datetime(2026, 11, 21, 0, 22, 53, tzinfo=datetime.UTC)),
    ("2026-11-21T00:22:53Z", datetime.datetime(2026, 11, 21, 0, 22, 53, tzinfo=datetime.UTC)),
    ("2026-11-21", datetime.datetime(2026, 11, 21, tzinfo=datetime.UTC)),
)


BIG_ROWS = 300_000  # enough that a copy takes a moment: a signal can land in its middle


@pytest.fixture(scope="session")
def big_source(tmp_path_factory) -> str:
    """An SQLite file: BIG_ROWS rows at head, made once: enough that the copy takes a moment."""
    url = f"sqlite:///{tmp_path_factory.mktemp('big') / 'db' / 'app.db'}"
    rows = ((i, f"row {i} 🎉", f"2026-01-01 00:00:{i % 60:02d}.{i % 1_000_000:06d}") for i in range(1, BIG_ROWS + 1))
    make_source(url, rows)
    return url


@pytest.fixture(scope="session")
def big_postgres_source(postgres_server) -> str:
    """A PostgreSQL database: BIG_ROWS rows at head, made once, dropped at the end of the session."""
    name = f"tm_big_{uuid.uuid4().hex[:8]}"
    pg_execute(postgres_server, f'CREATE DATABASE "{name}"')
    url = make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    try:
        make_source(url)
        pg_execute(
            url,
            "INSERT INTO my_table (id, name, created_at) SELECT i, 'row ' || i || ' 🎉',"
            " timestamptz '2026-01-01 00:00:00+00' + i * interval '1.000001 second'"
            " FROM generate_series(1, $1) AS i",
            BIG_ROWS,
        )
        yield url
    finally:
        pg_execute(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
