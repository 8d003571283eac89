"""Shared by the benchmarks: child processes that always die, scratch databases that always go, readiness
polling, side-by-side statistics and the environment report.

Benchmarks are not timed tests: they measure the project and a baseline alternately in one run, on the
same machine at the same moment, and report medians and ratios.
"""

import asyncio
import contextlib
import importlib.metadata
import os
import platform
import re
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from server.settings import ENVIRONMENT_VARIABLES

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DEFAULT_POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
DB_PREFIX = "bench_"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
LISTENING = re.compile(rb"listening on http://[^:\s]+:(\d+)")

# Everything that would change the server's settings behind the benchmark's back: every declared setting.
SERVER_VARIABLES = frozenset(ENVIRONMENT_VARIABLES)
# The warm-up rounds leave __pycache__ behind, as an installed service has its bytecode: an environment
# that forbids writing it (some CI images and sandboxes set this) would have every timed start compile the
# project's modules and the revision files again. Both sides of a comparison start alike without it.
NOT_PASSED_ON = SERVER_VARIABLES | {"PYTHONDONTWRITEBYTECODE"}
CLEARED = "the server's variables and PYTHONDONTWRITEBYTECODE"  # for the printed commands


class BenchError(Exception):
    """A run that could not be measured (a process failed, a database was unreachable): said in one line."""


def clean_environ(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NOT_PASSED_ON}
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def command_line(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    """The command as a user would type it: the variables that matter, then the arguments."""
    shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    return f"{shown} {shlex.join(argv)}".strip()


# --- processes ----------------------------------------------------------------------------------------


class Child:
    """A started process, its output in a file, in a process group of its own (so Ctrl-C in the terminal
    reaches the benchmark alone, and the benchmark stops the children in order)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], cwd: Path, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.port: int | None = None
        self.cpu: float | None = None  # user + system seconds when it became ready (or exited)
        self.maxrss: int | None = None  # peak resident bytes, from wait4 once it exited (wait_exit)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join("    " + line for line in self.log().splitlines()[-lines:])

    def find_port(self) -> int | None:
        if self.port is None:
            match = LISTENING.search(self.log_path.read_bytes())
            if match:
                self.port = int(match.group(1))
        return self.port

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM to its group, then SIGKILL if it does not leave in time; its exit status."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


class Children:
    """Every process the benchmark starts; stop_all() in a finally leaves none behind."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.running: list[Child] = []

    def start(self, argv: Sequence[str], env: dict[str, str], label: str) -> Child:
        child = Child(argv, env, self.workdir, self.workdir / f"{label}-{uuid.uuid4().hex[:8]}.log")
        self.running.append(child)
        return child

    async def run(self, argv: Sequence[str], env: dict[str, str], label: str, timeout: float) -> tuple[float, Child]:
        """Start a process and wait until it exits 0 (BenchError otherwise, see wait_exit); stopped either way.
        Its seconds from start to exit, and the child (cpu, maxrss, log)."""
        child = self.start(argv, env, label)
        try:
            return await wait_exit(child, timeout), child
        finally:
            self.stop(child)

    def stop(self, *children: Child) -> None:
        # SIGTERM to all first, then wait: N processes shut down in parallel, not one after another.
        for child in children:
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            child.stop()
            if child in self.running:
                self.running.remove(child)

    def stop_all(self) -> None:
        self.stop(*list(self.running))


def raise_keyboard_interrupt_on_sigterm() -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so the finally blocks stop processes and drop databases."""

    def handler(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a live process has used so far, all threads (Linux /proc), else None."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (field 3 onwards), or None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def group_pids(pgid: int) -> list[int]:
    """Every live process in a process group: a child started by Children and the workers it forked."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[2]) == pgid:  # pgrp: field 5 of stat
                pids.append(int(entry.name))
    return pids


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds used so far by the live processes of a process group, summed."""
    return sum(cpu_seconds(pid) or 0.0 for pid in group_pids(pgid))


def machine_busy_seconds() -> float | None:
    """CPU seconds every CPU of the machine has spent busy since boot, whoever for (/proc/stat; steal time
    counts as busy: another guest had the core). None where /proc/stat is not there."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a live process (VmRSS in /proc/PID/status), else None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # the kernel says kB and means KiB
    except (OSError, ValueError, IndexError):
        return None
    return None


# --- readiness ----------------------------------------------------------------------------------------


async def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status code and body of GET path over a fresh connection (Connection: close; read to the end)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        response = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise BenchError(f"GET {path} on port {port}: not an HTTP response: {response[:80]!r}")
    if b"transfer-encoding: chunked" in head.lower():
        raise BenchError(f"GET {path} on port {port}: chunked responses are not read here")
    return int(parts[1]), body


async def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """The status code of GET path, or None when the server does not answer (yet)."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def wait_ready(child: Child, path: str, poll: float, timeout: float) -> float:
    """Seconds from the child's start until GET path answers 200, polling every `poll` seconds."""
    deadline = child.started + timeout
    while True:
        if child.find_port() is not None and await http_status(child.port, path) == 200:
            elapsed = time.perf_counter() - child.started
            child.cpu = cpu_seconds(child.pid)
            return elapsed
        if child.process.poll() is not None:
            raise BenchError(f"pid {child.pid} exited {child.process.returncode} before ready:\n{child.log_tail()}")
        if time.perf_counter() > deadline:
            raise BenchError(f"pid {child.pid} not ready within {timeout:g} s:\n{child.log_tail()}")
        await asyncio.sleep(poll)


async def wait_exit(child: Child, timeout: float) -> float:
    """Seconds from the child's start until it exits 0; its CPU seconds in child.cpu and its peak resident
    memory in child.maxrss (both from wait4: exact, and of that process alone, not its children)."""

    def reap() -> tuple[int, object]:
        _, status, usage = os.wait4(child.pid, 0)
        return status, usage

    waiting = asyncio.get_running_loop().run_in_executor(None, reap)
    try:
        status, usage = await asyncio.wait_for(asyncio.shield(waiting), timeout)
    except TimeoutError:
        tail = child.log_tail()
        child.stop()  # the kill ends the wait4 in the thread; Popen then reaps nothing and reports -9
        with contextlib.suppress(ChildProcessError):
            await waiting
        raise BenchError(f"pid {child.pid} did not finish within {timeout:g} s:\n{tail}") from None
    elapsed = time.perf_counter() - child.started
    child.process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must be told
    child.cpu = usage.ru_utime + usage.ru_stime
    child.maxrss = usage.ru_maxrss * 1024  # Linux reports KiB
    if child.process.returncode != 0:
        raise BenchError(f"pid {child.pid} exited {child.process.returncode}:\n{child.log_tail()}")
    return elapsed


# --- databases ----------------------------------------------------------------------------------------


class Databases:
    """Fresh, empty databases named bench_*, each dropped again (drop_all() in a finally)."""

    def __init__(self, kind: str, postgres_url: str, workdir: Path):
        self.kind = kind
        self.admin_dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
        self.workdir = workdir
        self.created: list[str] = []  # PostgreSQL names, or SQLite file paths

    async def _admin(self, sql: str, fetch: bool = False):
        try:
            connection = await asyncpg.connect(self.admin_dsn, timeout=10)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            url = make_url(self.admin_dsn)
            raise BenchError(
                f"PostgreSQL not reachable at {url.host}:{url.port or 5432} ({type(exc).__name__}: {exc})"
            ) from None
        try:
            return await (connection.fetchval(sql) if fetch else connection.execute(sql))
        finally:
            await connection.close()

    async def create(self) -> str:
        """A URL (sync driver form, as users give it) for a new empty database."""
        name = f"{DB_PREFIX}{uuid.uuid4().hex[:12]}"
        if self.kind == "sqlite":
            path = self.workdir / "databases" / name / "app.db"  # the server creates the file itself
            path.parent.mkdir(parents=True)
            self.created.append(str(path))
            return f"sqlite:///{path}"
        self.created.append(name)
        await self._admin(f'CREATE DATABASE "{name}"')
        return make_url(self.admin_dsn).set(drivername="postgresql", database=name).render_as_string(False)

    async def drop(self, url: str) -> None:
        name = make_url(url).database
        if self.kind == "sqlite":
            for suffix in ("", "-journal", "-wal", "-shm", ".migration-lock"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name + suffix)
        else:
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with contextlib.suppress(ValueError):
            self.created.remove(name)

    async def drop_all(self) -> None:
        for name in list(self.created):
            if self.kind == "sqlite":
                await self.drop(f"sqlite:///{name}")
            else:
                await self.drop(make_url(self.admin_dsn).set(database=name).render_as_string(False))

    async def backend_pids(self, url: str) -> list[int]:
        """The server processes of the sessions connected to a benchmark's database now (PostgreSQL only)."""
        name = make_url(url).database.replace("'", "''")
        pids = await self._admin(
            f"SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()",
            fetch=True,
        )
        return list(pids or ())

    async def server_version(self) -> str:
        if self.kind == "sqlite":
            return f"SQLite {sqlite3.sqlite_version} (file in {self.workdir})"
        version = await self._admin("SELECT version()", fetch=True)
        url = make_url(self.admin_dsn)
        return f"{version.split(' on ')[0]} at {url.host}:{url.port or 5432}"

    async def scalar(self, url: str, sql: str):
        """One value from a benchmark's database, for checking the work was really done."""
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(make_url(url).database)) as connection:
                row = connection.execute(sql).fetchone()
                return row and row[0]
        connection = await asyncpg.connect(url, timeout=10)
        try:
            return await connection.fetchval(sql)
        finally:
            await connection.close()


def async_url(url: str) -> str:
    """postgresql:// or sqlite:/// as the async drivers' URL."""
    parsed = make_url(url)
    driver = "postgresql+asyncpg" if parsed.get_backend_name() == "postgresql" else "sqlite+aiosqlite"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


# --- figures ------------------------------------------------------------------------------------------


class Samples:
    """Wall-clock seconds of one side, round by round, with the CPU seconds its processes used."""

    def __init__(self, label: str):
        self.label = label
        self.values: list[float] = []
        self.cpu: list[float] = []

    def add(self, value: float, cpu: float | None = None) -> None:
        self.values.append(value)
        if cpu is not None:
            self.cpu.append(cpu)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None

    def row(self) -> str:
        v = self.values
        cpu = f"{self.cpu_median:8.3f} s" if self.cpu else f"{'-':>10}"
        return f"  {self.label:<46} {self.median:8.3f} s {min(v):8.3f} {max(v):8.3f} {cpu}   n={len(v)}"


def ratio_line(label: str, top: Samples, bottom: Samples, goal: float | None) -> tuple[str, float, str]:
    """Ratio of the medians, and the median of the per-round ratios (robust to the machine drifting)."""
    ratio = top.median / bottom.median
    paired = statistics.median(a / b for a, b in zip(top.values, bottom.values, strict=False))
    cpu = f"{top.cpu_median / bottom.cpu_median:8.2f} x" if top.cpu and bottom.cpu else f"{'-':>10}"
    verdict = "" if goal is None else ("met" if ratio <= goal else "MISSED")
    goal_text = "" if goal is None else f"goal <= {goal:.2f} x: {verdict}"
    line = f"  {label:<46} {ratio:8.2f} x {'(per round ' + format(paired, '.2f') + ' x)':>17} {cpu}   {goal_text}"
    return line, ratio, verdict


def table_header() -> str:
    return f"  {'wall clock; CPU = user+sys of the processes':<46} {'median':>10} {'min':>8} {'max':>8} {'CPU':>10}"


def environment_lines(database_version: str, extra_packages: Sequence[str] = ()) -> list[str]:
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("tornado", "sqlalchemy", "alembic", "asyncpg", "aiosqlite", *extra_packages)
        if _installed(name)
    )
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"  project         {ROOT} at {_git_revision()}",
        f"  CPUs            {os.cpu_count()} (usable by this process: {affinity}); load average {load}",
        f"  machine         {platform.platform()}",
        f"  Python          {platform.python_version()} ({PYTHON})",
        f"  database        {database_version}",
        f"  packages        {versions}",
    ]


def _git_revision() -> str:
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return commit or "(unknown commit)"


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def run_benchmark(name: str, database: str, postgres_url: str, body) -> int:
    """asyncio.run(body(children, databases, workdir)) in a temporary directory; every process it started is
    stopped and every bench_* database dropped afterwards: on success, failure, Ctrl-C and SIGTERM."""
    raise_keyboard_interrupt_on_sigterm()
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        workdir = Path(tmp)
        children = Children(workdir)
        databases = Databases(database, postgres_url, workdir)
        try:
            return asyncio.run(body(children, databases, workdir))
        except BenchError as exc:
            print(f"\nbenchmark failed: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted: stopping processes and dropping databases", file=sys.stderr)
            return 130
        finally:
            # A second Ctrl-C (or SIGTERM) must not cut the cleanup short: it is bounded in time anyway.
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
            children.stop_all()
            try:
                asyncio.run(databases.drop_all())
            except BenchError as exc:
                print(f"could not drop {', '.join(databases.created)}: {exc}", file=sys.stderr)
