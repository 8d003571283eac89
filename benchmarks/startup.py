"""Startup benchmark: how long `python run.py` takes to become ready, side by side with baselines.

    python benchmarks/startup.py [--rounds N] [--database postgresql|sqlite]

1. At head: `run.py --port=0` from process start until GET /health/ready answers 200, against a bare
   Tornado + SQLAlchemy script (connect once, listen, answer 200) timed the same way. Goal <= 1.3x.
2. 200 extra revisions: the server upgrading a fresh database through 202 revisions on startup, against
   `python -m alembic upgrade head` on the same revisions and a fresh database of its own. Goal <= 1.0x.
3. Eight starters at once on one fresh database until all are ready, against one starter alone on
   another fresh database. Goal <= 1.5x. For scale it also times eight bare scripts against one: what
   the machine itself charges for starting eight Python processes at once.
4. New features idle: a start at head as shipped (revision lint, backups and metrics on) against the same
   start with all three off (`--lint=off --backup=off`, and baselines/run_without_metrics.py, which leaves
   the metrics out). Goal <= 1.05x.

Each measurement alternates its sides (AB, BA, ...) for --rounds rounds after a warm-up, on the same
machine at the same moment; the figures are medians, the ratios are ratios of medians (and, beside
them, the median of the per-round ratios). Nothing here is an absolute timed assertion.

Every database it creates is named bench_* and dropped at the end; every process it starts is stopped,
also on Ctrl-C or a failure.
"""

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

from _common import (
    CLEARED,
    DEFAULT_POSTGRES_URL,
    PYTHON,
    ROOT,
    BenchError,
    Child,
    Children,
    Databases,
    Samples,
    async_url,
    clean_environ,
    command_line,
    environment_lines,
    ratio_line,
    run_benchmark,
    table_header,
    wait_ready,
)

READY_PATH = "/health/ready"
START_TIMEOUT = 120.0  # seconds; generous for 200 revisions on a loaded machine
HEAD = "0002"  # the newest revision in alembic/versions

Timing = tuple[float, float | None]  # wall-clock seconds, CPU seconds of the processes (None: unknown)
Verdict = tuple[str, float, float, str]  # title, ratio, goal, "met" | "MISSED"
Report = tuple[list[str], Verdict]

# The baseline: what any Tornado service on SQLAlchemy's asyncio engine pays to start, and no more.
BARE_SERVER = Path(__file__).with_name("baselines") / "startup_bare.py"
# run.py with make_metrics returning None; with --lint=off --backup=off, a start with every new feature off.
WITHOUT_METRICS = Path(__file__).with_name("baselines") / "run_without_metrics.py"
FEATURES_OFF = ["--lint=off", "--backup=off"]

REVISION = '''\
"""benchmark revision {number} of {count}"""
import sqlalchemy as sa

from alembic import op

revision = {revision!r}
down_revision = {down_revision!r}
branch_labels = None
depends_on = None


def upgrade():
    {upgrade}


def downgrade():
    {downgrade}
'''


def write_extra_revisions(directory: Path, count: int) -> tuple[Path, str]:
    """count trivial revisions after our head in directory/versions, and an alembic.ini that sees them
    after ours (as tests/conftest.py's extra_revisions does); returns (ini path, the new head)."""
    versions = directory / "versions"
    versions.mkdir(parents=True)
    down = HEAD
    for number in range(1, count + 1):
        revision = f"b{number:04d}"
        if number == 1:
            upgrade = 'op.create_table("bench_scratch", sa.Column("id", sa.Integer(), primary_key=True))'
            downgrade = 'op.drop_table("bench_scratch")'
        else:
            upgrade = f'op.add_column("bench_scratch", sa.Column("c{number:04d}", sa.Integer(), nullable=True))'
            downgrade = f'op.drop_column("bench_scratch", "c{number:04d}")'
        body = REVISION.format(
            number=number, count=count, revision=revision, down_revision=down, upgrade=upgrade, downgrade=downgrade
        )
        (versions / f"{revision}_bench.py").write_text(body)
        down = revision
    ini = directory / "alembic.ini"
    text = (ROOT / "alembic.ini").read_text()
    text = text.replace(
        "script_location = %(here)s/alembic",
        f"script_location = {ROOT / 'alembic'}\nversion_locations = {ROOT / 'alembic' / 'versions'}"
        f"{os.pathsep}{versions}",  # path_separator = os in alembic.ini
    ).replace("prepend_sys_path = %(here)s", f"prepend_sys_path = {ROOT}")
    if "version_locations" not in text:
        raise BenchError(f"{ROOT / 'alembic.ini'} changed shape: cannot add a version location to it")
    ini.write_text(text)
    return ini, down


class Bench:
    def __init__(self, args, children: Children, databases: Databases, workdir: Path):
        self.args = args
        self.children = children
        self.databases = databases
        self.workdir = workdir
        self.poll = args.poll_ms / 1000
        self.bare_script = BARE_SERVER
        self.last_run: list[tuple[Child, float]] = []  # the processes of the last ready_times, and when each was ready

    # --- what gets started --------------------------------------------------------------------------

    def project_argv(self) -> list[str]:
        return [PYTHON, str(ROOT / "run.py"), "--port=0"]

    def features_off_argv(self) -> list[str]:
        return [PYTHON, str(WITHOUT_METRICS), "--port=0", *FEATURES_OFF]

    def bare_argv(self, url: str) -> list[str]:
        return [PYTHON, str(self.bare_script), async_url(url)]

    def alembic_argv(self) -> list[str]:
        return [PYTHON, "-m", "alembic", "upgrade", "head"]

    @staticmethod
    def project_env(url: str, ini: Path | None = None) -> dict[str, str]:
        return {"DATABASE_URL": url, **({"ALEMBIC_CONFIG": str(ini)} if ini else {})}

    # --- one timed start ------------------------------------------------------------------------------

    async def ready_times(self, argvs_envs: list[tuple[list[str], dict[str, str]]], label: str) -> Timing:
        """Start every process at once; seconds from the first start until the last is ready, and the CPU
        seconds they had used by then, summed; then stop them all."""
        started = []
        try:
            for argv, env in argvs_envs:
                started.append(self.children.start(argv, clean_environ(**env), label))
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(wait_ready(c, READY_PATH, self.poll, START_TIMEOUT)) for c in started]
            ready = [c.started + t.result() - started[0].started for c, t in zip(started, tasks, strict=True)]
            self.last_run = list(zip(started, ready, strict=True))
            cpu = [c.cpu for c in started]
            return max(ready), None if None in cpu else sum(cpu)
        except* BenchError as group:
            raise group.exceptions[0] from None
        finally:
            self.children.stop(*started)

    async def project_ready(self, url: str, ini: Path | None = None, count: int = 1) -> Timing:
        return await self.ready_times([(self.project_argv(), self.project_env(url, ini))] * count, "project")

    async def bare_ready(self, url: str, count: int = 1) -> Timing:
        return await self.ready_times([(self.bare_argv(url), {})] * count, "bare")

    async def alembic_upgrade(self, url: str, ini: Path) -> Timing:
        env = clean_environ(**self.project_env(url, ini))
        seconds, child = await self.children.run(self.alembic_argv(), env, "alembic", START_TIMEOUT)
        return seconds, child.cpu

    async def on_fresh_database(self, work, expected_head: str) -> Timing:
        """work(url) on a database created for it (untimed), checked to be at expected_head, then dropped."""
        url = await self.databases.create()
        try:
            timing = await work(url)
            head = await self.databases.scalar(url, "SELECT version_num FROM alembic_version")
            if head != expected_head:
                raise BenchError(f"after the run the database is at {head!r}, not {expected_head!r}")
            return timing
        finally:
            await self.databases.drop(url)

    def rounds(self, *sides):
        """Each round runs every side once; the order rotates (AB, BA, ...) so none always goes first."""
        for number in range(self.args.rounds):
            shift = number % len(sides)
            yield number + 1, sides[shift:] + sides[:shift]

    # --- the three measurements -----------------------------------------------------------------------

    async def at_head(self) -> Report:
        driver = "aiosqlite" if self.databases.kind == "sqlite" else "asyncpg"
        return await self.compare_at_head(
            "1. Start to ready, database already at head",
            ("project", "run.py --port=0", self.project_ready),
            ("bare", f"Tornado + SQLAlchemy {driver} script", self.bare_ready),
            goal=1.1,
        )

    async def features_idle(self) -> Report:
        async def features_off(url: str) -> Timing:
            return await self.ready_times([(self.features_off_argv(), self.project_env(url))], "features-off")

        return await self.compare_at_head(
            "4. New features idle: a start at head with lint, backups and metrics on vs off",
            ("on", "run.py --port=0, as shipped", self.project_ready),
            ("off", "the same, all three off", features_off),
            goal=1.05,
        )

    async def compare_at_head(self, title: str, first: tuple, second: tuple, goal: float) -> Report:
        """Two ways to start, each side (name, description, start(url) -> Timing), on one database at head."""
        print(f"\n{title}: {self.args.rounds} rounds after a warm-up", flush=True)
        url = await self.databases.create()
        await self.children.run(
            [*self.project_argv()[:2], "--migrate=only"], clean_environ(**self.project_env(url)), "setup", START_TIMEOUT
        )
        (a, a_description, a_start), (b, b_description, b_start) = first, second
        a_samples, b_samples = Samples(f"{a}: {a_description}"), Samples(f"{b}: {b_description}")

        async def run_a():
            a_samples.add(*await a_start(url))

        async def run_b():
            b_samples.add(*await b_start(url))

        await a_start(url)  # warm-up: page cache, __pycache__
        await b_start(url)
        for number, sides in self.rounds(run_a, run_b):
            for side in sides:
                await side()
            print(f"  round {number}: {a} {a_samples.values[-1]:.3f} s, {b} {b_samples.values[-1]:.3f} s", flush=True)
        await self.databases.drop(url)
        line, ratio, verdict = ratio_line(f"ratio {a} / {b}", a_samples, b_samples, goal)
        return self.report(title, [a_samples, b_samples], [line]), (title, ratio, goal, verdict)

    async def many_revisions(self) -> Report:
        count = self.args.revisions
        title = f"2. Upgrade through {count} extra revisions: server startup vs alembic upgrade head"
        print(f"\n{title}: {self.args.rounds} rounds after a warm-up", flush=True)
        ini, head = write_extra_revisions(self.workdir / "extra_revisions", count)
        server = Samples(f"server: run.py --port=0 until ready, {count + 2} revs")
        alembic = Samples(f"alembic: alembic upgrade head until exit, {count + 2}")

        async def run_server():
            server.add(*await self.on_fresh_database(lambda url: self.project_ready(url, ini), head))

        async def run_alembic():
            alembic.add(*await self.on_fresh_database(lambda url: self.alembic_upgrade(url, ini), head))

        # warm-up: compiles the generated revisions' __pycache__ once, outside the figures
        await self.on_fresh_database(lambda url: self.alembic_upgrade(url, ini), head)
        await self.on_fresh_database(lambda url: self.project_ready(url, ini), head)
        for number, sides in self.rounds(run_server, run_alembic):
            for side in sides:
                await side()
            print(f"  round {number}: server {server.values[-1]:.3f} s, alembic {alembic.values[-1]:.3f} s", flush=True)
        line, ratio, verdict = ratio_line("ratio server / alembic", server, alembic, 1.0)
        revisions = count + 2
        per_revision = (
            f"  {'per revision (medians / ' + str(revisions) + ')':<46} {server.median / revisions * 1000:8.2f} ms"
            f" server, {alembic.median / revisions * 1000:.2f} ms alembic"
        )
        return self.report(title, [server, alembic], [line, per_revision]), (title, ratio, 1.0, verdict)

    async def many_starters(self) -> Report:
        n = self.args.starters
        title = f"3. {n} starters at once on one fresh database vs one alone"
        print(f"\n{title}: {self.args.rounds} rounds after a warm-up", flush=True)
        many, one = Samples(f"{n} x run.py, until all ready"), Samples("1 x run.py")
        bare_many, bare_one = Samples(f"reference: {n} x bare script, until all ready"), Samples("reference: 1 x bare")
        bare_url = await self.databases.create()  # the bare script only says SELECT 1: any database will do

        lockers, spreads, bare_spreads = [], [], []

        async def run_many():
            many.add(*await self.on_fresh_database(lambda url: self.project_ready(url, count=n), HEAD))
            # The one that migrates and every one that queued behind it log this; the rest found head at once.
            lockers.append(sum("took the migration lock" in child.log() for child, _ in self.last_run))
            spreads.append(self.spread())

        async def run_one():
            one.add(*await self.on_fresh_database(lambda url: self.project_ready(url), HEAD))

        async def run_bare_many():
            bare_many.add(*await self.bare_ready(bare_url, count=n))
            bare_spreads.append(self.spread())

        async def run_bare_one():
            bare_one.add(*await self.bare_ready(bare_url))

        await self.on_fresh_database(lambda url: self.project_ready(url, count=n), HEAD)  # warm-up
        for number, sides in self.rounds(run_many, run_one, run_bare_many, run_bare_one):
            for side in sides:
                await side()
            print(
                f"  round {number}: {n} starters {many.values[-1]:.3f} s, one {one.values[-1]:.3f} s;"
                f" bare {n} {bare_many.values[-1]:.3f} s, bare one {bare_one.values[-1]:.3f} s",
                flush=True,
            )
        await self.databases.drop(bare_url)
        line, ratio, verdict = ratio_line(f"ratio {n} starters / one", many, one, 1.5)
        reference, _, _ = ratio_line(f"reference: ratio {n} bare / one bare", bare_many, bare_one, None)
        extra = [m - o for m, o in zip(many.values, one.values, strict=True)]
        bare_extra = [m - o for m, o in zip(bare_many.values, bare_one.values, strict=True)]
        notes = [
            f"  {'extra seconds for ' + str(n) + ' starters (project)':<46} {statistics.median(extra):8.3f} s"
            "   (median of the per-round differences)",
            f"  {'extra seconds for ' + str(n) + ' bare scripts':<46} {statistics.median(bare_extra):8.3f} s"
            "   (what the machine charges for starting that many)",
            f"  {'first ready to last ready, ' + str(n) + ' x run.py':<46} {statistics.median(spreads):8.3f} s"
            f"   ({statistics.median(bare_spreads):.3f} s for {n} bare scripts)",
            f"  {'starters that took the migration lock':<46} {statistics.median(lockers):8g}"
            f"   of {n} (median; the one that migrated and those that queued behind it)",
        ]
        return (
            self.report(title, [many, one, bare_many, bare_one], [line, reference, *notes]),
            (title, ratio, 1.5, verdict),
        )

    def spread(self) -> float:
        """Seconds between the first and the last process of the last run becoming ready."""
        ready = [seconds for _, seconds in self.last_run]
        return max(ready) - min(ready)

    @staticmethod
    def report(title: str, samples: list[Samples], lines: list[str]) -> list[str]:
        return [title, table_header(), *(s.row() for s in samples), *lines]

    def commands(self) -> list[str]:
        poll = f"GET {READY_PATH} polled every {self.args.poll_ms:g} ms from process start until 200"
        db = "<fresh bench_* database>" if self.databases.kind == "postgresql" else "sqlite:///<fresh file>"
        head_db = "<bench_* database at head>" if self.databases.kind == "postgresql" else "sqlite:///<file at head>"
        ini = "<tmp>/extra_revisions/alembic.ini"
        return [
            f"  (cwd {self.workdir}; environment otherwise cleared of {CLEARED})",
            f"  1. {command_line(self.project_argv(), {'DATABASE_URL': head_db})}",
            f"     {command_line([PYTHON, str(self.bare_script), '<same database, async URL>'])}",
            f"     both: {poll}",
            f"  2. {command_line(self.project_argv(), {'DATABASE_URL': db, 'ALEMBIC_CONFIG': ini})}  ({poll})",
            f"     {command_line(self.alembic_argv(), {'DATABASE_URL': db, 'ALEMBIC_CONFIG': ini})}  (until exit 0)",
            f"  3. {self.args.starters} x {command_line(self.project_argv(), {'DATABASE_URL': db})} started together,"
            " until every one answers 200",
            f"     1 x the same on another {db}",
            f"  4. {command_line(self.project_argv(), {'DATABASE_URL': head_db})}",
            f"     {command_line(self.features_off_argv(), {'DATABASE_URL': head_db})}",
            f"     both: {poll}",
        ]


async def run(args, children: Children, databases: Databases, workdir: Path) -> int:
    bench = Bench(args, children, databases, workdir)
    print("Environment")
    print("\n".join(environment_lines(await databases.server_version())))
    print("Commands")
    print("\n".join(bench.commands()))
    started = time.perf_counter()
    reports, verdicts = [], []
    measurements = ((1, bench.at_head), (2, bench.many_revisions), (3, bench.many_starters), (4, bench.features_idle))
    for number, measure in measurements:
        if number in args.only:
            report, verdict = await measure()
            reports.append(report)
            verdicts.append(verdict)
    print(f"\nResults ({databases.kind}, {args.rounds} rounds each, {time.perf_counter() - started:.0f} s in all)")
    for report in reports:
        print()
        print("\n".join(report))
    print("\nSummary")
    for title, ratio, goal, verdict in verdicts:
        print(f"  {title.split(':')[0]:<70} {ratio:6.2f} x   goal <= {goal:g} x   {verdict}")
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds per measurement (default 7)")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument(
        "--postgres-url", default=DEFAULT_POSTGRES_URL, help="admin URL (default TEST_POSTGRES_URL or %(default)s)"
    )
    parser.add_argument("--revisions", type=int, default=200, help="extra revisions in measurement 2 (default 200)")
    parser.add_argument("--starters", type=int, default=8, help="processes started at once in measurement 3")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="readiness polling interval (default 5 ms)")
    parser.add_argument(
        "--only", type=lambda s: {int(x) for x in s.split(",")}, default={1, 2, 3, 4}, help="e.g. --only=1,3"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.revisions < 1 or args.starters < 1 or args.poll_ms <= 0:
        parser.error("--rounds, --revisions, --starters and --poll-ms must be positive")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return run_benchmark(
        "startup",
        args.database,
        args.postgres_url,
        lambda children, databases, workdir: run(args, children, databases, workdir),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
