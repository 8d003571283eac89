"""Transfer benchmark: `python -m server.transfer` in three directions, each side by side with the tool people
use for it.

    python benchmarks/transfer.py [--rows N] [--rounds N] [--memory-rows N,N] [--directions a,b,c]
                                  [--pgloader-schema ours|own]

Setup (untimed): an SQLite file brought to head by `run.py --migrate=only`, then --rows rows (default
1,000,000) inserted with sqlite3 executemany in one transaction: names of 5 to 50 characters in several
scripts (some with quotes, backslashes, tabs, emoji), created_at as SQLAlchemy writes it (microseconds)
and, for every 10th row, as CURRENT_TIMESTAMP writes it (seconds). The PostgreSQL source is a bench_*
database filled from that file by the transfer itself (verified, untimed).

Directions (--directions, default all three), each timed from process start to exit, into a fresh target:
  sqlite-postgres    transfer vs `pgloader <command file>`. With --pgloader-schema ours (default) pgloader's
                     database is first brought to head by our migrations (untimed) and pgloader loads data only
                     (`WITH data only, reset sequences`, alembic_version excluded): the same table, key and all.
                     With `own`, pgloader creates its own tables and indexes (its default mode). Goal >= 1.5x.
  postgres-postgres  transfer vs `pg_dump --data-only -Fc --table=my_table SOURCE | pg_restore --data-only
                     --dbname=TARGET`, the target brought to head by our migrations first (untimed). Goal >= 1.0x.
  postgres-sqlite    transfer vs `db-to-sqlite postgresql+psycopg2://SOURCE TARGET.db --table=my_table` (PyPI;
                     it creates its own table). Goal >= 2x.
Both sides of a direction get the same target: where the peer's is brought to head first (pgloader with
--pgloader-schema ours, pg_dump), so is the transfer's, untimed, and it finds nothing to migrate; into SQLite
both start from no file. The figure is rows / wall-clock second; the transfer's includes its verification,
the others verify nothing.
After each run the target is checked: the row count and max(id) match, and on PostgreSQL the next id the
sequence gives is max(id) + 1.

Memory: peak resident memory (ru_maxrss from wait4) of every transfer process, and of --rounds runs per
direction on sources of each of --memory-rows rows (default 100,000 and 300,000), to show that it stays flat
in the row count. For a pipeline the figure is its largest process.

Peers missing are skipped with how to install them: `apt-get install -y pgloader postgresql-client`,
`pip install db-to-sqlite psycopg2-binary`. Every database it creates is named bench_* and dropped at the end,
every file is in a temporary directory, and every process it starts is stopped, also on Ctrl-C, SIGTERM or a
failure.
"""

import argparse
import contextlib
import dataclasses
import datetime
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from _common import (
    CLEARED,
    DEFAULT_POSTGRES_URL,
    PYTHON,
    ROOT,
    BenchError,
    Children,
    Databases,
    Samples,
    _installed,
    clean_environ,
    command_line,
    environment_lines,
    ratio_line,
    run_benchmark,
    table_header,
)
from sqlalchemy.engine import make_url

RUN_TIMEOUT = 600.0
DIRECTIONS = ("sqlite-postgres", "postgres-postgres", "postgres-sqlite")
NAMES = (
    "plain ascii name",
    "Grüße aus Köln",
    "日本語のテキスト",
    "emoji 🎉🚀 party",
    'it\'s a "quote"',
    "back\\slash and\ttab",
    "x" * 50,
    "Ελληνικά κείμενα",
    "עברית",
    "mixed 中文 and ascii",
)


def make_source(path: Path, rows: int, children: Children) -> None:
    """An SQLite file at head (through run.py --migrate=only) holding `rows` rows."""
    migrate = children.start(
        [PYTHON, str(ROOT / "run.py"), "--migrate=only"], clean_environ(DATABASE_URL=f"sqlite:///{path}"), "setup"
    )
    if migrate.process.wait(120) != 0:
        raise BenchError(f"run.py --migrate=only failed:\n{migrate.log_tail()}")
    children.stop(migrate)
    start = datetime.datetime(2026, 1, 1)

    def generate():
        for i in range(1, rows + 1):
            moment = start + datetime.timedelta(seconds=i * 1.37, microseconds=i % 1000)
            # SQLAlchemy writes microseconds; CURRENT_TIMESTAMP (the server default) writes seconds.
            text = moment.strftime("%Y-%m-%d %H:%M:%S") if i % 10 == 0 else moment.strftime("%Y-%m-%d %H:%M:%S.%f")
            yield i, f"{NAMES[i % len(NAMES)]} {i}"[:50], text

    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.executemany("INSERT INTO my_table (id, name, created_at) VALUES (?, ?, ?)", generate())


@dataclasses.dataclass(frozen=True)
class Run:
    seconds: float
    cpu: float
    maxrss: int


@dataclasses.dataclass
class Direction:
    """One direction: our transfer and its peer, each a function of the row count (the source's size)."""

    key: str
    title: str
    peer: str
    goal: float  # throughput, transfer / peer
    ours: Callable[[int], Awaitable[Run]]
    theirs: Callable[[int], Awaitable[Run]] | None  # None: the peer is not installed
    missing: str = ""  # how to install the peer


class Bench:
    def __init__(self, args, children: Children, databases: Databases, workdir: Path):
        self.args, self.children, self.databases, self.workdir = args, children, databases, workdir
        self.sqlite_sources: dict[int, Path] = {}
        self.postgres_sources: dict[int, str] = {}

    async def transfer(self, source: str, target_kind: str, rows: int, at_head: bool = False) -> Run:
        """One transfer into a fresh database of target_kind (brought to head first, untimed, if at_head)."""
        target = await self.fresh(target_kind, at_head)
        argv = self.transfer_argv(source, target)
        return await self.timed(argv, clean_environ(PYTHONPATH=str(ROOT)), "transfer", target, rows)

    async def pgloader(self, rows: int) -> Run:
        target = await self.fresh("postgresql", at_head=self.pgloader_at_head)
        commands = self.workdir / "load.pgloader"
        commands.write_text(self.pgloader_commands(self.sqlite_sources[rows], target))
        return await self.timed(["pgloader", str(commands)], clean_environ(), "pgloader", target, rows)

    async def pg_dump_restore(self, rows: int) -> Run:
        target = await self.fresh("postgresql", at_head=True)
        argv = ["bash", "-c", self.pg_dump_command(self.postgres_sources[rows], target)]
        return await self.timed(argv, clean_environ(), "pg_dump", target, rows)

    async def db_to_sqlite(self, rows: int) -> Run:
        target = await self.fresh("sqlite")
        argv = self.db_to_sqlite_argv(self.postgres_sources[rows], target)
        return await self.timed(argv, clean_environ(), "db-to-sqlite", target, rows)

    async def timed(self, argv: list[str], env: dict[str, str], label: str, target: str, rows: int) -> Run:
        """Run one side to exit 0, check its target holds the rows, drop the target either way."""
        try:
            seconds, child = await self.children.run(argv, env, label, RUN_TIMEOUT)
            await self.check(target, rows)
            return Run(seconds, child.cpu, child.maxrss)
        finally:
            await self.drop(target)

    @property
    def pgloader_at_head(self) -> bool:
        return self.args.pgloader_schema == "ours"

    def transfer_argv(self, source: str, target: str) -> list[str]:
        return [PYTHON, "-m", "server.transfer", source, target]

    def pgloader_commands(self, source: Path, url: str) -> str:
        mode = (
            "data only, reset sequences"
            if self.args.pgloader_schema == "ours"
            else "include drop, create tables, create indexes, reset sequences"
        )
        return (
            f"LOAD DATABASE\n  FROM sqlite://{source}\n  INTO {url}\n"
            f"WITH {mode}\nEXCLUDING TABLE NAMES LIKE 'alembic_version';\n"
        )

    def pg_dump_command(self, source: str, target: str) -> str:
        dump = shlex.join(["pg_dump", "--data-only", "-Fc", "--table=my_table", source])
        restore = shlex.join(["pg_restore", "--data-only", f"--dbname={target}"])
        return f"set -o pipefail; {dump} | {restore}"

    def db_to_sqlite_argv(self, source: str, target: str) -> list[str]:
        url = make_url(source).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
        return [db_to_sqlite_path() or "db-to-sqlite", url, make_url(target).database, "--table=my_table"]

    async def fresh(self, kind: str, at_head: bool = False) -> str:
        """A new empty target: a bench_* database, or an SQLite path not yet created; at head if asked."""
        if kind == "sqlite":
            url = f"sqlite:///{self.workdir / 'targets' / uuid.uuid4().hex[:12] / 'app.db'}"
            Path(make_url(url).database).parent.mkdir(parents=True)
        else:
            url = await self.databases.create()
        if at_head:
            await self.children.run(
                [PYTHON, str(ROOT / "run.py"), "--migrate=only"], clean_environ(DATABASE_URL=url), "setup", RUN_TIMEOUT
            )
        return url

    async def drop(self, url: str) -> None:
        if make_url(url).get_backend_name() == "sqlite":
            shutil.rmtree(Path(make_url(url).database).parent, ignore_errors=True)
        else:
            await self.databases.drop(url)

    async def check(self, url: str, rows: int) -> None:
        """The work was really done: every row and, on PostgreSQL, a sequence that continues after them."""
        if make_url(url).get_backend_name() == "sqlite":
            with contextlib.closing(sqlite3.connect(make_url(url).database)) as connection:
                count, highest = connection.execute("SELECT count(*), max(id) FROM my_table").fetchone()
            following = rows + 1  # an INTEGER PRIMARY KEY gives max(id) + 1 by itself
        else:
            connection = await asyncpg.connect(url, timeout=10)
            try:
                count, highest = await connection.fetchrow("SELECT count(*), max(id) FROM my_table")
                following = await connection.fetchval("SELECT nextval(pg_get_serial_sequence('my_table', 'id'))")
            finally:
                await connection.close()
        if count != rows or highest != rows or following != rows + 1:
            raise BenchError(f"{url} holds {count} rows, max(id) {highest}, next id {following}; expected {rows}")

    def directions(self) -> list[Direction]:
        def sqlite_source(rows: int) -> str:
            return f"sqlite:///{self.sqlite_sources[rows]}"

        has_pgloader = shutil.which("pgloader") is not None
        has_pg_dump = shutil.which("pg_dump") is not None and shutil.which("pg_restore") is not None
        has_db_to_sqlite = db_to_sqlite_path() is not None and _installed("psycopg2-binary")
        every = [
            Direction(
                "sqlite-postgres",
                "SQLite -> PostgreSQL",
                "pgloader",
                1.5,
                lambda rows: self.transfer(sqlite_source(rows), "postgresql", rows, self.pgloader_at_head),
                self.pgloader if has_pgloader else None,
                "apt-get install -y pgloader",
            ),
            Direction(
                "postgres-postgres",
                "PostgreSQL -> PostgreSQL",
                "pg_dump | pg_restore",
                1.0,
                lambda rows: self.transfer(self.postgres_sources[rows], "postgresql", rows, at_head=True),
                self.pg_dump_restore if has_pg_dump else None,
                "apt-get install -y postgresql-client",
            ),
            Direction(
                "postgres-sqlite",
                "PostgreSQL -> SQLite",
                "db-to-sqlite",
                2.0,
                lambda rows: self.transfer(self.postgres_sources[rows], "sqlite", rows),
                self.db_to_sqlite if has_db_to_sqlite else None,
                f"{PYTHON} -m pip install db-to-sqlite psycopg2-binary",
            ),
        ]
        return [d for d in every if d.key in self.args.directions]

    async def make_sources(self) -> None:
        sizes = sorted({self.args.rows, *self.args.memory_rows})
        needs_postgres = any(key.startswith("postgres") for key in self.args.directions)
        for rows in sizes:
            self.sqlite_sources[rows] = path = self.workdir / f"source-{rows}.db"
            make_source(path, rows, self.children)
            if needs_postgres:  # filled by the transfer itself: verified, and the same rows
                url = await self.databases.create()
                await self.children.run(
                    self.transfer_argv(f"sqlite:///{path}", url),
                    clean_environ(PYTHONPATH=str(ROOT)),
                    "setup",
                    RUN_TIMEOUT,
                )
                self.postgres_sources[rows] = url

    async def run(self) -> int:
        args = self.args
        directions = self.directions()
        print("Environment")
        print("\n".join(environment_lines(await self.databases.server_version(), ["tqdm", "db-to-sqlite"])))
        print(f"  pgloader        {pgloader_version() if shutil.which('pgloader') else 'not installed'}")
        print(f"  pg_dump         {tool_version('pg_dump')}")
        started = time.perf_counter()
        await self.make_sources()
        big = self.sqlite_sources[args.rows]
        print(
            f"  sources         {args.rows:,} rows ({big.stat().st_size / 2**20:.0f} MiB SQLite); "
            f"{', '.join(format(r, ',') for r in args.memory_rows)} for memory; made in "
            f"{time.perf_counter() - started:.1f} s"
        )
        print(f"Commands (cwd a temporary directory; environment cleared of {CLEARED})")
        print(
            f"  transfer      {command_line(self.transfer_argv('SOURCE_URL', 'TARGET_URL'))} (PYTHONPATH=<repository>)"
        )
        print(f"  pgloader      pgloader <file>: {self.pgloader_commands(big, 'TARGET_URL')!r}")
        if args.pgloader_schema == "ours":
            print("                (the database brought to head by run.py --migrate=only first, untimed)")
        print(f"  pg_dump       bash -c {self.pg_dump_command('SOURCE_URL', 'TARGET_URL')!r} (target at head first)")
        print("  (where a peer's target is at head first, so is the transfer's: the same work on both sides)")
        print(f"  db-to-sqlite  {command_line(self.db_to_sqlite_argv('postgresql:///SOURCE', 'sqlite:///TARGET.db'))}")

        results = []
        for direction in directions:
            results.append(await self.measure(direction))
        print(f"\nResults ({args.rows:,} rows, {args.rounds} rounds, {time.perf_counter() - started:.0f} s in all)")
        for direction, ours, theirs, memory in results:
            self.report(direction, ours, theirs, memory)
        return 0

    async def measure(self, direction: Direction):
        args = self.args
        ours = Samples(f"transfer {direction.title} (verified)")
        theirs = Samples(direction.peer)
        rss: list[int] = []

        async def run_ours():
            run = await direction.ours(args.rows)
            ours.add(run.seconds, run.cpu)
            rss.append(run.maxrss)

        async def run_theirs():
            assert direction.theirs is not None
            run = await direction.theirs(args.rows)
            theirs.add(run.seconds, run.cpu)

        sides = [run_ours, run_theirs] if direction.theirs else [run_ours]
        print(f"\n{direction.title}: warm-up, then {args.rounds} rounds", flush=True)
        for side in sides:
            await side()
        for samples in (ours, theirs):
            samples.values.clear(), samples.cpu.clear()
        rss.clear()
        for number in range(args.rounds):
            shift = number % len(sides)
            for side in sides[shift:] + sides[:shift]:
                await side()
            line = (
                f"  round {number + 1}: transfer {rate(args.rows, ours.values[-1])}, peak RSS {rss[-1] / 2**20:.1f} MiB"
            )
            if direction.theirs:
                line += f"; {direction.peer} {rate(args.rows, theirs.values[-1])}"
            print(line, flush=True)
        memory = {args.rows: rss}
        for rows in args.memory_rows:
            memory[rows] = [(await direction.ours(rows)).maxrss for _ in range(args.rounds)]
        return direction, ours, theirs, memory

    def report(self, direction: Direction, ours: Samples, theirs: Samples, memory: dict[int, list[int]]) -> None:
        rows = self.args.rows
        print(f"\n{direction.title}")
        print(table_header())
        print(ours.row())
        rows_line = f"  {'rows/s, median':<46} {rows / ours.median:>10,.0f}   transfer"
        if direction.theirs and theirs.values:
            print(theirs.row())
            print(ratio_line(f"ratio transfer time / {direction.peer} time", ours, theirs, None)[0])
            ratio = theirs.median / ours.median
            paired = statistics.median(t / o for t, o in zip(theirs.values, ours.values, strict=True))
            print(rows_line + f", {rows / theirs.median:,.0f} {direction.peer}")
            print(
                f"  {'throughput ratio transfer / ' + direction.peer:<46} {ratio:8.2f} x (per round {paired:.2f} x)"
                f"   goal >= {direction.goal:.1f} x: {'met' if ratio >= direction.goal else 'MISSED'}"
            )
        else:
            print(rows_line)
            print(f"  {direction.peer} not installed: no ratio ({direction.missing})")
        print(f"  peak RSS of the transfer (ru_maxrss), median of {self.args.rounds}; flat in the row count")
        for count, values in sorted(memory.items()):
            median, peak = statistics.median(values) / 2**20, max(values) / 2**20
            print(f"  {format(count, ',') + ' rows':<46} {median:8.1f} MiB   (max {peak:.1f})")


def rate(rows: int, seconds: float) -> str:
    return f"{seconds:.2f} s ({rows / seconds:,.0f} rows/s)"


def db_to_sqlite_path() -> str | None:
    beside = Path(PYTHON).parent / "db-to-sqlite"  # installed into the benchmark's own environment
    return str(beside) if beside.exists() else shutil.which("db-to-sqlite")


def tool_version(name: str) -> str:
    if shutil.which(name) is None:
        return "not installed"
    try:
        return subprocess.run([name, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown version"


def pgloader_version() -> str:
    try:
        out = subprocess.run(["pgloader", "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown version"
    return " ".join(out.split())


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the source (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--memory-rows",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[100_000, 300_000],
        help="rows of the smaller sources whose peak RSS is measured too (default 100000,300000)",
    )
    parser.add_argument(
        "--directions",
        type=lambda text: text.split(","),
        default=list(DIRECTIONS),
        help=f"which to measure, comma-separated (default {','.join(DIRECTIONS)})",
    )
    parser.add_argument("--pgloader-schema", choices=("ours", "own"), default="ours")
    parser.add_argument(
        "--postgres-url", default=DEFAULT_POSTGRES_URL, help="admin URL (default TEST_POSTGRES_URL or %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.rounds < 1 or min(args.memory_rows) < 1:
        parser.error("--rows, --rounds and --memory-rows must be positive")
    if set(args.directions) - set(DIRECTIONS):
        parser.error(f"--directions: choose among {', '.join(DIRECTIONS)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return run_benchmark(
        "transfer",
        "postgresql",
        args.postgres_url,
        lambda children, databases, workdir: Bench(args, children, databases, workdir).run(),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
