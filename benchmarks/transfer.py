"""Transfer benchmark: `python -m server.transfer` from SQLite to PostgreSQL, side by side with pgloader.

    python benchmarks/transfer.py [--rows N] [--rounds N] [--memory-rows N] [--pgloader-schema ours|own]

Setup (untimed): an SQLite file brought to head by `run.py --migrate=only`, then --rows rows (default
1,000,000) inserted with sqlite3 executemany in one transaction: names of 5 to 50 characters in several
scripts (some with quotes, backslashes, tabs, emoji), created_at as SQLAlchemy writes it (microseconds)
and, for every 10th row, as CURRENT_TIMESTAMP writes it (seconds).

Each round, in alternating order:
  transfer  `python -m server.transfer sqlite:///<file> postgresql:///<fresh bench_* db>`: the database is
            created empty; the command brings it to head itself, copies, verifies and commits.
  pgloader  `pgloader <command file>` from the same file into another fresh bench_* database. With
            --pgloader-schema ours (default) that database is first brought to head by our migrations
            (untimed) and pgloader loads data only (`WITH data only, reset sequences`, alembic_version
            excluded): the same target table, primary key and all. With `own`, pgloader creates its own
            tables and indexes from the SQLite schema (its default mode).
Both are timed from process start to exit; the figure is rows / wall-clock second. After each run the
target is checked: the row count and max(id) match, and the next id the sequence gives is max(id) + 1.
Goal: the transfer at >= 1.5x pgloader's rows/s (verification included on our side; pgloader verifies
nothing).

Memory: peak resident memory (ru_maxrss from wait4) of every transfer process, and of --rounds runs on
files of each of --memory-rows rows (default 100,000 and 300,000), to show that it stays flat in the row
count.

Every database it creates is named bench_* and dropped at the end, and every process it starts is stopped,
also on Ctrl-C, SIGTERM or a failure. The defaults take about a minute on 2 CPUs.
"""

import argparse
import contextlib
import datetime
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
from _common import (
    DEFAULT_POSTGRES_URL,
    PYTHON,
    ROOT,
    BenchError,
    Children,
    Databases,
    Samples,
    clean_environ,
    command_line,
    environment_lines,
    ratio_line,
    run_benchmark,
    table_header,
)

RUN_TIMEOUT = 600.0
GOAL = 1.5
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


class Bench:
    def __init__(self, args, children: Children, databases: Databases, workdir: Path):
        self.args, self.children, self.databases, self.workdir = args, children, databases, workdir

    async def transfer(self, source: Path, rows: int) -> tuple[float, float, int]:
        """Wall seconds, CPU seconds and peak RSS bytes of one transfer into a fresh database."""
        url = await self.databases.create()
        try:
            seconds, child = await self.children.run(
                self.transfer_argv(source, url), clean_environ(PYTHONPATH=str(ROOT)), "transfer", RUN_TIMEOUT
            )
            await self.check(url, rows)
            return seconds, child.cpu, child.maxrss
        finally:
            await self.databases.drop(url)

    async def pgloader(self, source: Path, rows: int) -> tuple[float, float, int]:
        url = await self.databases.create()
        try:
            if self.args.pgloader_schema == "ours":
                await self.children.run(
                    [PYTHON, str(ROOT / "run.py"), "--migrate=only"],
                    clean_environ(DATABASE_URL=url),
                    "setup",
                    RUN_TIMEOUT,
                )
            commands = self.workdir / "load.pgloader"
            commands.write_text(self.pgloader_commands(source, url))
            seconds, child = await self.children.run(
                ["pgloader", str(commands)], clean_environ(), "pgloader", RUN_TIMEOUT
            )
            await self.check(url, rows)
            return seconds, child.cpu, child.maxrss
        finally:
            await self.databases.drop(url)

    def transfer_argv(self, source: Path, url: str) -> list[str]:
        return [PYTHON, "-m", "server.transfer", f"sqlite:///{source}", url]

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

    async def check(self, url: str, rows: int) -> None:
        """The work was really done: every row, and a sequence that continues after the highest id."""
        connection = await asyncpg.connect(url, timeout=10)
        try:
            count, highest = await connection.fetchrow("SELECT count(*), max(id) FROM my_table")
            following = await connection.fetchval("SELECT nextval(pg_get_serial_sequence('my_table', 'id'))")
        finally:
            await connection.close()
        if count != rows or highest != rows or following != rows + 1:
            raise BenchError(f"target holds {count} rows, max(id) {highest}, next id {following}; expected {rows}")

    async def run(self) -> int:
        args = self.args

        def rate(seconds: float) -> str:
            return f"{seconds:.2f} s ({args.rows / seconds:,.0f} rows/s)"

        has_pgloader = shutil.which("pgloader") is not None
        print("Environment")
        print("\n".join(environment_lines(await self.databases.server_version(), ["tqdm"])))
        print(
            f"  pgloader        {pgloader_version() if has_pgloader else 'not installed (apt-get install -y pgloader)'}"
        )
        big = self.workdir / "source.db"
        smaller = {rows: self.workdir / f"source-{rows}.db" for rows in args.memory_rows}
        started = time.perf_counter()
        for rows, path in ((args.rows, big), *smaller.items()):
            make_source(path, rows, self.children)
        sizes = ", ".join(f"{rows:,}" for rows in smaller)
        made = time.perf_counter() - started
        size = big.stat().st_size / 2**20
        print(f"  sources         {args.rows:,} rows ({size:.0f} MiB); {sizes}; made in {made:.1f} s")
        print("Commands (cwd the repository; environment cleared of the server's variables)")
        print(f"  transfer  {command_line(self.transfer_argv(big, '<fresh bench_* database>'))}")
        if has_pgloader:
            print(f"  pgloader  pgloader <file>:  {self.pgloader_commands(big, '<fresh bench_* database>')!r}")
            if args.pgloader_schema == "ours":
                print("            (the database brought to head by run.py --migrate=only first, untimed)")

        transfer, pgloader = Samples("transfer (verification included)"), Samples("pgloader")
        rss: list[int] = []

        async def run_transfer():
            seconds, cpu, peak = await self.transfer(big, args.rows)
            transfer.add(seconds, cpu)
            rss.append(peak)

        async def run_pgloader():
            pgloader.add(*(await self.pgloader(big, args.rows))[:2])

        sides = [run_transfer, run_pgloader] if has_pgloader else [run_transfer]
        print(f"\nWarm-up, then {args.rounds} rounds", flush=True)
        for side in sides:
            await side()
        transfer.values.clear(), transfer.cpu.clear(), pgloader.values.clear(), pgloader.cpu.clear(), rss.clear()
        for number in range(args.rounds):
            shift = number % len(sides)
            for side in sides[shift:] + sides[:shift]:
                await side()
            line = f"  round {number + 1}: transfer {rate(transfer.values[-1])}"
            if has_pgloader:
                line += f", pgloader {rate(pgloader.values[-1])}"
            print(line, flush=True)
        smaller_rss = {
            rows: [(await self.transfer(path, rows))[2] for _ in range(args.rounds)] for rows, path in smaller.items()
        }

        print(f"\nResults ({args.rows:,} rows, {args.rounds} rounds, {time.perf_counter() - started:.0f} s in all)")
        print(table_header())
        print(transfer.row())
        rows_line = f"  {'rows/s, median':<46} {args.rows / transfer.median:>10,.0f}   transfer"
        if has_pgloader:
            print(pgloader.row())
            line, _, _ = ratio_line("ratio transfer time / pgloader time", transfer, pgloader, round(1 / GOAL, 2))
            print(line)
            ratio = pgloader.median / transfer.median
            paired = statistics.median(p / t for p, t in zip(pgloader.values, transfer.values, strict=True))
            rows_line += f", {args.rows / pgloader.median:,.0f} pgloader"
            print(rows_line)
            print(
                f"  {'throughput ratio transfer / pgloader':<46} {ratio:8.2f} x (per round {paired:.2f} x)"
                f"   goal >= {GOAL:.1f} x: {'met' if ratio >= GOAL else 'MISSED'}"
            )
        else:
            print(rows_line)
            print("  pgloader not installed: no ratio")
        print(f"  peak RSS of the transfer (ru_maxrss), median of {args.rounds}; goal < 150 MiB, flat in the row count")
        for rows, values in sorted({**smaller_rss, args.rows: rss}.items()):
            median, peak = statistics.median(values) / 2**20, max(values) / 2**20
            print(f"  {format(rows, ',') + ' rows':<46} {median:8.1f} MiB   (max {peak:.1f})")
        return 0


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
    parser.add_argument("--pgloader-schema", choices=("ours", "own"), default="ours")
    parser.add_argument(
        "--postgres-url", default=DEFAULT_POSTGRES_URL, help="admin URL (default TEST_POSTGRES_URL or %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.rounds < 1 or min(args.memory_rows) < 1:
        parser.error("--rows, --rounds and --memory-rows must be positive")
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
