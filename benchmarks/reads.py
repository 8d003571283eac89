"""Reads benchmark: GET /?limit=50 from the project, side by side with a bare Tornado + asyncpg handler.

    python benchmarks/reads.py [--rounds N] [--duration S] [--connections C] [--only throughput,load,processes,metrics]

Setup: a fresh bench_* PostgreSQL database, brought to head by `run.py --migrate=only`, then 10,000 rows
of my_table (names of 10 to 50 characters, some of them not ASCII) copied in with asyncpg.

1. throughput: the project (`run.py --port=0`) against a bare baseline written to a temp file: Tornado,
   an asyncpg pool as large as the project's, one parameterised query, orjson; nothing else. It runs in
   two variants: `bare` (asyncpg.create_pool as it comes, which sends a reset query whenever a connection
   goes back to the pool) and `bare no-reset` (create_pool(reset=<no-op>): one round trip per request, as
   the project makes). Each round starts each side afresh, checks one page against the table, warms it
   up with wrk, then measures `wrk -t1 -c16 -d8s` with a Lua script that asks for a random page (`after`
   0..9950) on every request, the same sequence for every side. Goal: the project at >= 0.8x the bare
   requests per second.
2. load: the project, one process, wrk at 64 connections stopped at fixed request counts: 10,000, then
   20,000 (the load figure: zero errors, p50/p99), then 70,000 more. Resident memory (VmRSS) after
   10,000 and after 100,000 requests; goal: within 10%. For scale, the bare server then gets the same
   20,000 requests.
3. processes: `--processes 2` against 1, for the project and for the bare server, in the same rounds as
   measurement 1. wrk and PostgreSQL share the machine's cores with the servers, so on 2 cores this
   says what a second process buys here, not what it buys on a machine with cores to spare.
4. metrics: the project as it ships (GET /metrics, every request counted and timed) against the same build
   with its metrics off, one process each, alternating as in 1. The build without metrics is the benchmark's
   own launcher (NO_METRICS_LAUNCHER: run.py's main with `make_metrics` replaced by `lambda: None`), so the
   server has no switch for it. Goal: the metrics cost at most 5% of the requests per second.

The sides of a measurement alternate (AB, BA, ...) for --rounds rounds; the figures are medians, the
ratios are ratios of medians (and, beside them, the median of the per-round ratios). Nothing here is an
absolute timed assertion.

Every database it creates is named bench_* and dropped at the end; every process it starts (servers,
wrk, py-spy) is stopped, also on Ctrl-C, SIGTERM or a failure.
"""

import argparse
import asyncio
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import asyncpg
from _common import (
    CLEARED,
    DEFAULT_POSTGRES_URL,
    PYTHON,
    ROOT,
    BenchError,
    Child,
    Children,
    Databases,
    clean_environ,
    command_line,
    cpu_seconds,
    environment_lines,
    group_cpu_seconds,
    http_get,
    machine_busy_seconds,
    rss_bytes,
    run_benchmark,
    wait_exit,
    wait_ready,
)

READY_PATH = "/health/ready"
READY_LINE = re.compile(rb"\] ready\r?$", re.MULTILINE)  # one per worker: "[pid server] ready", "[pid bare] ready"
START_TIMEOUT = 60.0
POLL = 0.02
ROWS = 10_000
LIMIT = 50
CHECK_AFTER = 1234  # the page every started server must serve correctly before it is measured
LOAD_CONNECTIONS = 64
LOAD_REQUESTS = 20_000
MEMORY_FIRST, MEMORY_TOTAL = 10_000, 100_000
GOAL_RATIO, GOAL_GROWTH = 0.8, 0.10
WRK_TIMEOUT = "10s"  # wrk's default of 2 s would call a slow answer on a noisy machine an error
COUNTED_RUN_LIMIT = 900.0  # seconds a counted wrk run may take before the benchmark gives up
SECTIONS = ("throughput", "load", "processes", "metrics")
GOAL_METRICS = 0.95  # metrics on / off, requests per second
# run.py with the metrics off (make_metrics returning None leaves out /metrics, the per-request counting,
# the pool's events and the event-loop timer): a launcher of the benchmark's own; the server has no switch.
BASELINES = Path(__file__).with_name("baselines")
NO_METRICS_LAUNCHER = BASELINES / "run_without_metrics.py"

Verdict = tuple[str, str, str, str]  # title, figure, goal, "MET" | "MISSED" | "-"

# The baseline: what any Tornado service pays to serve this page from asyncpg, and no more.
BARE_SERVER = BASELINES / "reads_bare_asyncpg.py"

# wrk's Lua: a random page on every request, the same sequence for both sides (fixed seed, one thread).
# With a count after "--", the thread stops after that many responses and says so: wrk itself would go
# on sleeping until -d is over, so the benchmark then sends it SIGINT. done() prints the figures as JSON.
WRK_SCRIPT = """\
-- written by benchmarks/reads.py
local limit, max_after = $limit, $max_after
local stop_after, responses = 0, 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  stop_after = tonumber(args[1] or "0")
  math.randomseed(20240601)
end

function request()
  return wrk.format("GET", "/?limit=" .. limit .. "&after=" .. math.random(0, max_after))
end
$response
function done(summary, latency, requests)
  local e, statuses = summary.errors, {}
  for _, thread in ipairs(threads) do
    statuses[#statuses + 1] = thread:get("error_statuses")
  end
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "p50_us": %.0f, "p90_us": %.0f, "p99_us": %.0f, "max_us": %.0f, '
      .. '"statuses": "%s"}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    table.concat(statuses, " ")))
end
"""
WRK_COUNTING = """
-- Defined only in the counting script: with it, wrk hands every response to Lua, which costs wrk time.
local bad = {}

function response(status, headers, body)
  responses = responses + 1
  if status > 399 then  -- which statuses wrk counts as errors, for done() to report (a global: thread:get)
    bad[status] = (bad[status] or 0) + 1
    local parts = {}
    for code, count in pairs(bad) do
      parts[#parts + 1] = count .. " x " .. code
    end
    error_statuses = table.concat(parts, ", ")
  end
  if responses == stop_after then
    io.write("WRK_THREAD_STOPPED\\n")
    io.stdout:flush()
    wrk.thread:stop()
  end
end
"""
WRK_STOPPED = b"WRK_THREAD_STOPPED"
NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789      -'éüßøłçñåæжяфΩλπ中日語🙂🚀"


@dataclasses.dataclass
class WrkResult:
    requests: int
    seconds: float
    connect: int
    read: int
    write: int
    status: int  # responses with a status of 400 or more
    timeout: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: str = ""  # e.g. "3 x 503": the statuses behind `status` (counted runs only)
    wrk_cpu: float | None = None  # CPU seconds wrk itself used

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def errors(self) -> int:
        return self.connect + self.read + self.write + self.status + self.timeout

    def error_text(self) -> str:
        if not self.errors:
            return "0"
        parts = [f"{name} {getattr(self, name)}" for name in ("status", "connect", "read", "write", "timeout")]
        if self.statuses:
            parts[0] += f": {self.statuses}"
        return f"{self.errors} ({', '.join(p for p in parts if not p.endswith(' 0'))})"


@dataclasses.dataclass
class Measured:
    """One side's measured wrk run in one round, and what the machine spent on it."""

    wrk: WrkResult
    server_cpu: float  # CPU seconds of every process of the server during the run
    postgres_cpu: float | None  # CPU seconds of the database's backends (None: not visible from here)
    connections: int  # backends connected to the database at the end of the run
    machine_cpu: float | None  # CPU seconds the whole machine was busy during the run, whoever for

    @property
    def other_cpu(self) -> float | None:
        """CPU seconds the machine spent on neither the server, its backends nor wrk: neighbours, mostly."""
        if self.machine_cpu is None or self.postgres_cpu is None or self.wrk.wrk_cpu is None:
            return None
        return max(self.machine_cpu - self.server_cpu - self.postgres_cpu - self.wrk.wrk_cpu, 0.0)


class Side:
    """A server configuration measured round after round."""

    def __init__(self, kind: str, processes: int, label: str):
        self.kind, self.processes, self.label = kind, processes, label
        self.runs: list[Measured] = []

    def median(self, figure) -> float | None:
        values = [figure(run) for run in self.runs]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    @property
    def rps(self) -> list[float]:
        return [run.wrk.rps for run in self.runs]

    def row(self) -> str:
        cpu_ms = self.median(lambda r: r.server_cpu / r.wrk.requests * 1000)
        pg_ms = self.median(lambda r: r.postgres_cpu / r.wrk.requests * 1000 if r.postgres_cpu is not None else None)
        cores = self.median(lambda r: r.server_cpu / r.wrk.seconds)
        pg_cores = self.median(lambda r: r.postgres_cpu / r.wrk.seconds if r.postgres_cpu is not None else None)
        wrk_cores = self.median(lambda r: r.wrk.wrk_cpu / r.wrk.seconds if r.wrk.wrk_cpu is not None else None)
        other_cores = self.median(lambda r: r.other_cpu / r.wrk.seconds if r.other_cpu is not None else None)
        return (
            f"  {self.label:<17} {statistics.median(self.rps):6.0f} {min(self.rps):6.0f} {max(self.rps):6.0f}"
            f" {self.median(lambda r: r.wrk.p50_ms):6.1f} {self.median(lambda r: r.wrk.p99_ms):6.1f}"
            f" {sum(r.wrk.errors for r in self.runs):6d}"
            f" {cpu_ms:7.3f} {_fmt(pg_ms, '6.3f')}"
            f" {cores:6.2f} {_fmt(pg_cores, '5.2f')} {_fmt(wrk_cores, '5.2f')} {_fmt(other_cores, '5.2f')}"
            f" {self.median(lambda r: r.connections):5.0f}"
        )


def _fmt(value: float | None, spec: str) -> str:
    width = int(spec.split(".")[0])
    return format(value, spec) if value is not None else f"{'-':>{width}}"


def side_table_header(rounds: int) -> list[str]:
    return [
        f"  {'medians, ' + str(rounds) + ' rounds':<17} {'requests/second':>20} {'latency ms':>13} {'':>6}"
        f" {'CPU ms/request':>14} {'cores busy during the run':>24} {'PG':>5}",
        f"  {'side':<17} {'median':>6} {'min':>6} {'max':>6} {'p50':>6} {'p99':>6} {'errors':>6}"
        f" {'server':>7} {'PG':>6} {'server':>6} {'PG':>5} {'wrk':>5} {'other':>5} {'conns':>5}",
    ]


def ratio(label: str, top: Side, bottom: Side, goal: float | None) -> tuple[str, float, str]:
    """Ratio of the median requests per second, the median of the per-round ratios, and of CPU per request."""
    value = statistics.median(top.rps) / statistics.median(bottom.rps)
    paired = statistics.median(a / b for a, b in zip(top.rps, bottom.rps, strict=True))
    cpu_top = top.median(lambda r: r.server_cpu / r.wrk.requests)
    cpu_bottom = bottom.median(lambda r: r.server_cpu / r.wrk.requests)
    verdict = "-" if goal is None else ("MET" if value >= goal else "MISSED")
    goal_text = "" if goal is None else f"   goal >= {goal:.2f} x: {verdict}"
    line = (
        f"  {label:<40} {value:6.2f} x   (per round {paired:.2f} x; server CPU per request"
        f" {cpu_top / cpu_bottom:.2f} x){goal_text}"
    )
    return line, value, verdict


def names(count: int, seed: int = 20240601) -> list[tuple[str]]:
    """count names of 10 to 50 characters, some not ASCII (accents, Cyrillic, CJK, emoji); always the same."""
    rng = random.Random(seed)
    return [("".join(rng.choices(NAME_ALPHABET, k=rng.randint(10, 50))),) for _ in range(count)]


def project_pool(url: str) -> tuple[int, int, str]:
    """The pool the project serves with by default: (connections kept open, most at once, what it is).
    Read from the project's own engine factory, so that a change of defaults there changes the baseline."""
    sys.path.insert(0, str(ROOT))
    try:
        from server import db
        from server.settings import load_settings

        settings = load_settings([], environ={"DATABASE_URL": url})
        factory = getattr(db, "make_serving_engine", None)  # the handlers' engine, where the project has one
        engine = factory(settings) if factory else db.make_engine(settings.database_url)
        pool = engine.sync_engine.pool
        size, overflow = pool.size(), max(getattr(pool, "_max_overflow", 0), 0)
        return size, size + overflow, f"{type(pool).__name__}(pool_size={size}, max_overflow={overflow})"
    except Exception as exc:  # the comparison must not stop because the project changed shape: assume 10
        return 10, 10, f"unknown ({type(exc).__name__}: {exc}); 10 assumed"
    finally:
        sys.path.remove(str(ROOT))


# Frames every sample passes through (the entry point and the event loop): 100% total, nothing learnt.
OUTER_FRAMES = {
    "<module>", "main", "run", "serve", "Runner.run", "BaseEventLoop.run_until_complete",
    "BaseEventLoop.run_forever", "BaseEventLoop._run_once", "Handle._run",
}  # fmt: skip


def summarise_profile(path: Path, top: int = 15) -> list[str]:
    """Top functions by self and by total samples from py-spy's raw (collapsed stack) output, and self
    samples by package."""
    own, total, packages = Counter(), Counter(), Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
        packages[_package(frames[-1])] += n
    if not samples:
        return ["  (no samples)"]
    lines = [f"  {samples} samples (100 a second) while the event loop was busy, not waiting; % of those samples"]
    lines.append("  self time by package: " + ", ".join(f"{p} {n / samples:.0%}" for p, n in packages.most_common(9)))
    lines.append("  top functions by self time:")
    lines += [f"    {n / samples:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines.append("  top functions by total time (self + callees), below the event loop:")
    inclusive = [(f, n) for f, n in total.most_common() if f.split(" (")[0] not in OUTER_FRAMES]
    lines += [f"    {n / samples:6.1%}  {frame}" for frame, n in inclusive[:top]]
    return lines


def _package(frame: str) -> str:
    match = re.search(r"\((.*)\)$", frame)
    path = match.group(1) if match else frame
    if "site-packages/" in path:
        return path.split("site-packages/")[1].split("/")[0]
    if path.startswith(("server/", str(ROOT))):
        return "server (project)"
    return path.split("/")[0] if "/" in path else f"stdlib {path.removesuffix('.py')}"


class Bench:
    def __init__(self, args, children: Children, databases: Databases, workdir: Path):
        self.args = args
        self.children = children
        self.databases = databases
        self.workdir = workdir
        self.url = ""  # the bench_* database, made in setup()
        self.expected: list[tuple[int, str, datetime]] = []
        # Only the settings are read and an engine built (never connected): any database name will do.
        self.pool_min, self.pool_max, self.pool_text = project_pool(databases.admin_dsn)
        self.wrk = shutil.which("wrk") or "wrk"
        self.bare_script = BARE_SERVER
        self.script = workdir / "pages.lua"
        self.counting_script = workdir / "pages-counted.lua"
        for path, response in ((self.script, ""), (self.counting_script, WRK_COUNTING)):
            path.write_text(
                WRK_SCRIPT.replace("$limit", str(LIMIT))
                .replace("$max_after", str(ROWS - LIMIT))
                .replace("$response", response)
            )

    # --- setup -----------------------------------------------------------------------------------------

    async def setup(self) -> None:
        started = time.perf_counter()
        self.url = await self.databases.create()
        await self.children.run(
            [PYTHON, str(ROOT / "run.py"), "--migrate=only"],
            clean_environ(DATABASE_URL=self.url),
            "migrate",
            START_TIMEOUT,
        )
        connection = await asyncpg.connect(self.url, timeout=10)
        try:
            await connection.copy_records_to_table("my_table", records=names(ROWS), columns=["name"])
            await connection.execute("VACUUM ANALYZE my_table")  # as a table that has been around a while
            first, last, count = await connection.fetchrow("SELECT min(id), max(id), count(*) FROM my_table")
            rows = await connection.fetch(
                "SELECT id, name, created_at FROM my_table WHERE id > $1 ORDER BY id LIMIT $2", CHECK_AFTER, LIMIT
            )
        finally:
            await connection.close()
        if (first, last, count) != (1, ROWS, ROWS):
            raise BenchError(
                f"my_table holds ids {first}..{last} ({count} rows), not 1..{ROWS}: the pages would differ"
            )
        self.expected = [(r["id"], r["name"], r["created_at"]) for r in rows]
        print(f"  database at head with {count} rows in {time.perf_counter() - started:.1f} s", flush=True)

    # --- servers ---------------------------------------------------------------------------------------

    def project_argv(self, processes: int) -> list[str]:
        return [PYTHON, str(ROOT / "run.py"), "--port=0", f"--processes={processes}"]

    def no_metrics_argv(self, processes: int) -> list[str]:
        return [PYTHON, str(NO_METRICS_LAUNCHER), "--port=0", f"--processes={processes}"]

    def bare_argv(self, processes: int, reset: bool = True) -> list[str]:
        pool = [f"--pool-min={self.pool_min}", f"--pool-max={self.pool_max}", *([] if reset else ["--no-reset"])]
        return [PYTHON, str(self.bare_script), self.url or "<database URL>", f"--processes={processes}", *pool]

    async def start(self, kind: str, processes: int) -> Child:
        """A server ("project", "project-no-metrics", "bare" or "bare-no-reset"), ready in every worker, that has
        served the check page correctly."""
        if kind.startswith("project"):
            argv = self.project_argv(processes) if kind == "project" else self.no_metrics_argv(processes)
            child = self.children.start(argv, clean_environ(DATABASE_URL=self.url), kind)
        else:
            child = self.children.start(self.bare_argv(processes, reset=kind == "bare"), clean_environ(), kind)
        try:
            await wait_ready(child, READY_PATH, POLL, START_TIMEOUT)
            # With --processes each worker answers for itself: wait until every one has said "ready".
            while len(READY_LINE.findall(child.log_path.read_bytes())) < processes:
                if child.process.poll() is not None or time.perf_counter() > child.started + START_TIMEOUT:
                    raise BenchError(f"{kind}: not every worker of {processes} became ready:\n{child.log_tail()}")
                await asyncio.sleep(POLL)
            await self.check_page(kind, child.port)
        except BaseException:
            self.children.stop(child)
            raise
        return child

    async def check_page(self, kind: str, port: int) -> None:
        """The same page, read by the benchmark from the table, must come back: a fast wrong answer is no win."""
        status, body = await http_get(port, f"/?limit={LIMIT}&after={CHECK_AFTER}")
        try:
            page = json.loads(body)
            items = [(i["id"], i["name"], datetime.fromisoformat(i["created_at"])) for i in page["items"]]
            right = status == 200 and items == self.expected and page["next"] == self.expected[-1][0]
            right = right and all(set(i) == {"id", "name", "created_at"} for i in page["items"])
        except (ValueError, KeyError, TypeError):
            right = False
        if not right:
            raise BenchError(f"{kind} answered GET /?limit={LIMIT}&after={CHECK_AFTER} with {status}: {body[:300]!r}")

    # --- wrk ---------------------------------------------------------------------------------------------

    def wrk_argv(self, connections: int, duration: str, script: Path, count: int | None = None) -> list[str]:
        argv = [self.wrk, "-t1", f"-c{connections}", f"-d{duration}", "--latency", f"--timeout={WRK_TIMEOUT}"]
        argv += ["-s", str(script), f"http://127.0.0.1:PORT/?limit={LIMIT}"]
        return argv + (["--", str(count)] if count else [])

    async def wrk_timed(self, port: int, connections: int, seconds: float) -> WrkResult:
        argv = self.wrk_argv(connections, f"{seconds:g}s", self.script)
        _, child = await self.children.run(_with_port(argv, port), clean_environ(), "wrk", seconds + 60)
        result = parse_wrk(child)
        result.wrk_cpu = child.cpu
        return result

    async def wrk_counted(self, port: int, connections: int, count: int) -> WrkResult:
        """Exactly count responses at this concurrency; requests per second from the wall clock."""
        argv = self.wrk_argv(connections, f"{COUNTED_RUN_LIMIT:g}s", self.counting_script, count)
        child = self.children.start(_with_port(argv, port), clean_environ(), "wrk")
        try:
            while WRK_STOPPED not in child.log_path.read_bytes():
                if child.process.poll() is not None:
                    raise BenchError(
                        f"wrk exited {child.process.returncode} before {count} responses:\n{child.log_tail()}"
                    )
                if time.perf_counter() > child.started + COUNTED_RUN_LIMIT - 5:
                    raise BenchError(f"wrk did not see {count} responses in {COUNTED_RUN_LIMIT:g} s")
                await asyncio.sleep(POLL)
            seconds = time.perf_counter() - child.started
            os.kill(child.pid, signal.SIGINT)  # wrk prints its figures and exits 0
            await wait_exit(child, 30)
        finally:
            self.children.stop(child)
        result = parse_wrk(child)
        result.seconds = seconds  # wrk reports its -d here, not the time the run took
        result.wrk_cpu = child.cpu
        return result

    # --- 1 and 3: throughput, one and two processes --------------------------------------------------

    async def measure(self, side: Side) -> Measured:
        child = await self.start(side.kind, side.processes)
        try:
            await self.wrk_timed(child.port, self.args.connections, self.args.warmup)
            backends = {pid: cpu_seconds(pid) for pid in await self.databases.backend_pids(self.url)}
            cpu, machine = group_cpu_seconds(child.pid), machine_busy_seconds()
            result = await self.wrk_timed(child.port, self.args.connections, self.args.duration)
            cpu, machine_after = group_cpu_seconds(child.pid) - cpu, machine_busy_seconds()
            after = {pid: cpu_seconds(pid) for pid in await self.databases.backend_pids(self.url)}
        finally:
            self.children.stop(child)
        # Backends of this database only (the machine is shared); one that closed during the run is missed.
        seen = [(after[pid], backends.get(pid) or 0.0) for pid in after if after[pid] is not None]
        postgres = sum(a - b for a, b in seen) if seen else None
        machine = machine_after - machine if machine is not None and machine_after is not None else None
        return Measured(result, cpu, postgres, len(after), machine)

    async def throughput(self, with_processes: bool) -> tuple[list[str], list[str], list[Verdict]]:
        one = [Side("bare", 1, "bare x1"), Side("project", 1, "project x1")]
        strict = [Side("bare-no-reset", 1, "bare no-reset x1")] if 1 in self.args.only else []
        two = [Side("bare", 2, "bare x2"), Side("project", 2, "project x2")] if with_processes else []
        sides = one + strict + two
        print(
            f"\nThroughput: {', '.join(s.label for s in sides)}; {self.args.rounds} rounds of"
            f" {self.args.warmup:g} s warm-up + {self.args.duration:g} s measured each",
            flush=True,
        )
        for number in range(self.args.rounds):
            shift = number % len(sides)  # the order rotates so that no side always goes first
            for side in sides[shift:] + sides[:shift]:
                side.runs.append(await self.measure(side))
            figures = ", ".join(f"{s.label} {s.rps[-1]:.0f}" for s in sides)
            print(f"  round {number + 1}: requests/s {figures}", flush=True)

        verdicts: list[Verdict] = []
        title = (
            f"1. Throughput: GET /?limit={LIMIT}&after=<random 0..{ROWS - LIMIT}>, wrk -t1"
            f" -c{self.args.connections} -d{self.args.duration:g}s, one process each"
        )
        first, verdicts = [], []
        if strict:
            line, value, verdict = ratio("project / bare", one[1], one[0], GOAL_RATIO)
            strict_line, strict_value, strict_verdict = ratio("project / bare no-reset", one[1], strict[0], GOAL_RATIO)
            first = [
                title,
                *side_table_header(self.args.rounds),
                *(s.row() for s in (one[0], strict[0], one[1])),
                "  requests per second:",
                line,
                strict_line,
                "  bare: asyncpg.create_pool as it comes, which resets each connection it takes back (RESET ALL,"
                " UNLISTEN *, ...:",
                "  a second round trip per request). bare no-reset: the same with create_pool(reset=<no-op>), one"
                " round trip,",
                "  as the project (AUTOCOMMIT, no reset on return) does.",
                "  cores busy: CPU seconds per second of the run; PG = the backends of the bench database; other ="
                " the rest of",
                "  the machine (PostgreSQL's own processes, the benchmark, neighbours). CPU per request is the"
                " steadier figure.",
            ]
            verdicts = [
                ("1. project / bare, 1 process (asyncpg pool defaults)", f"{value:.2f} x", ">= 0.80 x", verdict),
                ("1. project / bare no-reset, 1 process", f"{strict_value:.2f} x", ">= 0.80 x", strict_verdict),
            ]
        third = []
        if two:
            project_gain, project_value, _ = ratio("project x2 / project x1", two[1], one[1], None)
            bare_gain, bare_value, _ = ratio("bare x2 / bare x1", two[0], one[0], None)
            at_two, two_value, _ = ratio("project / bare, both x2", two[1], two[0], None)
            wrk_cores = statistics.median(
                r.wrk.wrk_cpu / r.wrk.seconds for s in sides for r in s.runs if r.wrk.wrk_cpu is not None
            )
            third = [
                f"3. --processes 2 against 1 (same wrk load: -t1 -c{self.args.connections}), same rounds as 1",
                *side_table_header(self.args.rounds),
                *(s.row() for s in sides),
                project_gain,
                bare_gain,
                at_two,
                f"  Caveat: these {os.cpu_count()} CPUs are shared by the servers, PostgreSQL, wrk itself (it used"
                f" {wrk_cores:.2f} of a core, median)",
                "  and whatever else runs on the machine ('other'). A second process only gets what those leave.",
            ]
            verdicts += [
                ("3. project --processes 2 / 1 (wrk on the same 2 cores)", f"{project_value:.2f} x", "report", "-"),
                ("3. bare --processes 2 / 1 (wrk on the same 2 cores)", f"{bare_value:.2f} x", "report", "-"),
                ("3. project / bare requests per second, 2 processes", f"{two_value:.2f} x", "report", "-"),
            ]
        return first, third, verdicts

    # --- 4: what the metrics cost ---------------------------------------------------------------------

    async def metrics_cost(self) -> tuple[list[str], list[Verdict]]:
        sides = [Side("project", 1, "metrics on x1"), Side("project-no-metrics", 1, "metrics off x1")]
        print(
            f"\nMetrics: {', '.join(s.label for s in sides)}; {self.args.rounds} rounds of"
            f" {self.args.warmup:g} s warm-up + {self.args.duration:g} s measured each",
            flush=True,
        )
        for number in range(self.args.rounds):
            for side in sides if number % 2 == 0 else sides[::-1]:
                side.runs.append(await self.measure(side))
            figures = ", ".join(f"{s.label} {s.rps[-1]:.0f}" for s in sides)
            print(f"  round {number + 1}: requests/s {figures}", flush=True)
        line, value, verdict = ratio("metrics on / off", sides[0], sides[1], GOAL_METRICS)
        lines = [
            f"4. Metrics: the project as it ships against NO_METRICS_LAUNCHER (make_metrics -> None), GET /?limit="
            f"{LIMIT}, wrk -t1 -c{self.args.connections} -d{self.args.duration:g}s, one process each",
            *side_table_header(self.args.rounds),
            *(s.row() for s in sides),
            line,
            f"  the metrics cost {1 - value:.1%} of the requests per second (negative: within the noise)",
        ]
        return lines, [("4. metrics on / off, requests per second", f"{value:.3f} x", ">= 0.95 x", verdict)]

    # --- 2: load and memory ----------------------------------------------------------------------------

    async def load(self) -> tuple[list[str], list[Verdict]]:
        print(
            f"\nLoad: project x1, wrk -t1 -c{LOAD_CONNECTIONS}: {MEMORY_FIRST}, then {LOAD_REQUESTS}, then"
            f" {MEMORY_TOTAL - MEMORY_FIRST - LOAD_REQUESTS} requests",
            flush=True,
        )
        child = await self.start("project", 1)
        profiler = None
        try:
            rss = [("after start and one check request", rss_bytes(child.pid))]
            first = await self.wrk_counted(child.port, LOAD_CONNECTIONS, MEMORY_FIRST)
            await asyncio.sleep(0.5)  # let the requests wrk abandoned at its stop finish
            rss.append((f"after the first {first.requests} requests", rss_bytes(child.pid)))
            print(f"  first {first.requests}: {first.rps:.0f} requests/s, errors {first.error_text()}", flush=True)
            loaded = await self.wrk_counted(child.port, LOAD_CONNECTIONS, LOAD_REQUESTS)
            print(f"  load {loaded.requests}: {loaded.rps:.0f} requests/s, errors {loaded.error_text()}", flush=True)
            if self.args.profile:
                profiler = self.children.start(self.py_spy_argv(child.pid), clean_environ(), "py-spy")
            rest = MEMORY_TOTAL - first.requests - loaded.requests
            last = await self.wrk_counted(child.port, LOAD_CONNECTIONS, rest)
            print(f"  rest {last.requests}: {last.rps:.0f} requests/s, errors {last.error_text()}", flush=True)
            if profiler is not None:
                os.kill(profiler.pid, signal.SIGINT)  # py-spy writes its file on Ctrl-C
                await wait_exit(profiler, 30)
            await asyncio.sleep(0.5)
            total = first.requests + loaded.requests + last.requests
            rss.append((f"after {total} requests", rss_bytes(child.pid)))
        finally:
            self.children.stop(*(c for c in (profiler, child) if c is not None))
        # For scale: the same 20,000 requests against the bare baseline. Tails at 64 connections on a pool of
        # 10 are not all the project's doing.
        bare = await self.start("bare", 1)
        try:
            reference = await self.wrk_counted(bare.port, LOAD_CONNECTIONS, LOAD_REQUESTS)
        finally:
            self.children.stop(bare)
        print(f"  bare {reference.requests}: {reference.rps:.0f} requests/s, errors {reference.error_text()}")
        if None in (value for _, value in rss):
            raise BenchError(f"cannot read VmRSS of pid {child.pid}")
        growth = rss[2][1] / rss[1][1] - 1
        errors = first.errors + loaded.errors + last.errors
        load_verdict = "MET" if loaded.errors == 0 else "MISSED"
        memory_verdict = "MET" if growth <= GOAL_GROWTH else "MISSED"
        runs = (("first", first), ("load", loaded), ("rest", last), ("bare ref", reference))
        lines = [
            f"2. Load and memory: project x1 (pid {child.pid}), wrk -t1 -c{LOAD_CONNECTIONS} stopped at fixed counts;"
            f" then, for scale, {LOAD_REQUESTS} on a fresh bare x1",
            f"  {'run':<8} {'requests':>9} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}"
            "  errors",
            *(
                f"  {name:<8} {r.requests:9d} {r.rps:7.0f} {r.p50_ms:7.1f} {r.p90_ms:7.1f} {r.p99_ms:7.1f}"
                f" {r.max_ms:7.1f}  {r.error_text()}"
                for name, r in runs
            ),
            f"  load: {loaded.requests} requests at {LOAD_CONNECTIONS} connections, errors {loaded.error_text()}"
            f" (non-2xx + socket errors; wrk timeout {WRK_TIMEOUT}), p50 {loaded.p50_ms:.1f} ms,"
            f" p99 {loaded.p99_ms:.1f} ms   goal 0 errors: {load_verdict}",
            f"  errors over all {total} requests: {errors}",
            *(f"  resident memory {label:<38} {value / 2**20:7.1f} MiB" for label, value in rss),
            f"  growth from {rss[1][0].removeprefix('after the first ')} to {total} requests: {growth:+.1%}"
            f"   goal <= +{GOAL_GROWTH:.0%}: {memory_verdict}",
        ]
        if self.args.profile:
            lines += [f"  py-spy during the last {last.requests} requests ({self.args.profile}):"]
            lines += summarise_profile(Path(self.args.profile))
        verdicts = [
            (f"2. load {LOAD_REQUESTS} requests at {LOAD_CONNECTIONS} connections: errors", str(loaded.errors), "0",
             load_verdict),
            ("2. load p50 / p99 latency", f"{loaded.p50_ms:.0f} / {loaded.p99_ms:.0f} ms", "report", "-"),
            (f"2. the same, over all {total} requests at {LOAD_CONNECTIONS} connections", str(errors), "0",
             "MET" if errors == 0 else "MISSED"),
            (f"2. RSS growth from {MEMORY_FIRST} to {MEMORY_TOTAL} requests", f"{growth:+.1%}", "<= +10%",
             memory_verdict),
        ]  # fmt: skip
        return lines, verdicts

    def py_spy_argv(self, pid: int) -> list[str]:
        py_spy = Path(PYTHON).with_name("py-spy")
        executable = str(py_spy) if py_spy.exists() else (shutil.which("py-spy") or "py-spy")
        return [executable, "record", "--pid", str(pid), "--format", "raw", "--rate", "100", "--nonblocking",
                "--output", self.args.profile]  # fmt: skip

    # --- report ----------------------------------------------------------------------------------------

    def commands(self) -> list[str]:
        db = "postgresql://…/bench_<fresh>"
        load_wrk = self.wrk_argv(LOAD_CONNECTIONS, f"{COUNTED_RUN_LIMIT:g}s", self.counting_script, MEMORY_FIRST)
        return [
            f"  (cwd {self.workdir}; environment otherwise cleared of {CLEARED})",
            f"  setup    {command_line([PYTHON, str(ROOT / 'run.py'), '--migrate=only'], {'DATABASE_URL': db})}; then"
            f" {ROWS} rows copied in with asyncpg, VACUUM ANALYZE",
            f"  project  {command_line(self.project_argv(1), {'DATABASE_URL': db})}   (and --processes=2)",
            f"  bare     {command_line(self.bare_argv(1)).replace('<database URL>', db)}   (and --processes=2)",
            f"           pool as the project's default: {self.pool_text}",
            f"  ready    GET {READY_PATH} answers 200 and every worker has logged 'ready'; then GET"
            f" /?limit={LIMIT}&after={CHECK_AFTER} must equal the table's rows",
            f"  warm-up  {command_line(self.wrk_argv(self.args.connections, f'{self.args.warmup:g}s', self.script))}",
            f"  measure  {command_line(self.wrk_argv(self.args.connections, f'{self.args.duration:g}s', self.script))}",
            f"  load     {command_line(load_wrk)}",
            "           (each thread stops itself after the count; the benchmark then sends wrk SIGINT)",
            f"  lua      {self.script.name}: after = math.random(0, {ROWS - LIMIT}) on every request, fixed seed",
            "  CPU      around each measured run, from /proc/PID/stat: server = its process group, PG = the"
            " backends connected to the bench database; wrk: wait4",
        ]


def _with_port(argv: list[str], port: int) -> list[str]:
    return [a.replace("127.0.0.1:PORT", f"127.0.0.1:{port}") for a in argv]


def parse_wrk(child: Child) -> WrkResult:
    match = re.search(r"^WRK_RESULT (\{.*\})$", child.log(), re.MULTILINE)
    if not match:
        raise BenchError(f"wrk printed no figures:\n{child.log_tail()}")
    r = json.loads(match.group(1))
    return WrkResult(
        requests=r["requests"],
        seconds=r["duration_us"] / 1e6,
        connect=r["connect"],
        read=r["read"],
        write=r["write"],
        status=r["status"],
        timeout=r["timeout"],
        p50_ms=r["p50_us"] / 1000,
        p90_ms=r["p90_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        statuses=r["statuses"],
    )


def wrk_version(wrk: str) -> str:
    try:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"wrk not found or not runnable ({exc}); install it (Debian: apt-get install wrk)") from None
    return (out.stdout + out.stderr).splitlines()[0].split(" Copyright")[0] if out.stdout + out.stderr else "wrk"


async def run(args, children: Children, databases: Databases, workdir: Path) -> int:
    bench = Bench(args, children, databases, workdir)
    print("Environment")
    print("\n".join(environment_lines(await databases.server_version(), extra_packages=("orjson",))))
    print(f"  load generator  {wrk_version(bench.wrk)} ({bench.wrk}), on the same machine as the servers")
    print("Commands")
    print("\n".join(bench.commands()))
    started = time.perf_counter()
    print("\nSetup", flush=True)
    await bench.setup()
    reports, verdicts = [], []
    if 1 in args.only or 3 in args.only:
        first, third, found = await bench.throughput(with_processes=3 in args.only)
        reports += [first, third]
        verdicts += found
    if 4 in args.only:
        fourth, found = await bench.metrics_cost()
        reports.append(fourth)
        verdicts += found
    if 2 in args.only:
        second, found = await bench.load()
        reports.append(second)
        verdicts += found
    await databases.drop(bench.url)
    print(f"\nResults (PostgreSQL, {args.rounds} rounds, {time.perf_counter() - started:.0f} s in all)")
    for report in sorted((r for r in reports if r), key=lambda r: r[0]):  # by number: "1. ...", "2. ..."
        print()
        print("\n".join(report))
    print("\nSummary")
    for title, figure, goal, verdict in sorted(verdicts, key=lambda v: v[0][0]):
        print(f"  {title:<62} {figure:>14}   goal {goal:<10} {verdict}")
    return 0


def parse_only(text: str) -> set[int]:
    chosen = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part.isdigit() and 1 <= int(part) <= len(SECTIONS):
            chosen.add(int(part))
        elif part in SECTIONS:
            chosen.add(SECTIONS.index(part) + 1)
        else:
            raise argparse.ArgumentTypeError(f"{part!r}: choose from {', '.join(SECTIONS)} (or 1 to {len(SECTIONS)})")
    return chosen


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of measurements 1 and 3 (default 5)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of each measured wrk run (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk before each measured run (default 2)")
    parser.add_argument(
        "--connections", type=int, default=16, help="wrk connections in measurements 1 and 3 (default 16)"
    )
    parser.add_argument(
        "--only",
        type=parse_only,
        default={1, 2, 3, 4},
        help="e.g. --only=throughput,metrics or --only=1,4 (default all)",
    )
    parser.add_argument(
        "--postgres-url", default=DEFAULT_POSTGRES_URL, help="admin URL (default TEST_POSTGRES_URL or %(default)s)"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="record the project with py-spy during the last part of measurement 2 (collapsed stacks to FILE)"
        " and print where its time goes",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.warmup <= 0 or args.connections < 1 or not args.only:
        parser.error("--rounds, --duration, --warmup and --connections must be positive; --only must name something")
    if args.profile and 2 not in args.only:
        parser.error("--profile records during measurement 2 (load): include it in --only")
    if args.profile:
        args.profile = str(Path(args.profile).resolve())
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return run_benchmark(
        "reads",
        "postgresql",
        args.postgres_url,
        lambda children, databases, workdir: run(args, children, databases, workdir),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
