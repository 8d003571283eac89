"""Backup benchmark: the snapshot before upgrading and `python -m server.backup restore`, on an SQLite file.

    python benchmarks/backup.py [--rows N] [--rounds N]

Setup (untimed): an SQLite file brought to head by `run.py --migrate=only`, then --rows rows (default
1,000,000) of my_table inserted with sqlite3 executemany in one transaction.

Each round, in alternating order, every side in a process of its own, timed from process start to exit:
  snapshot   the project's snapshot (take_snapshot: sqlite3's online backup API from one read transaction,
             row counts, PRAGMA journal_mode, integrity_check and the revision read back, rename)
  .backup    the sqlite3 command-line shell's `.backup` into a new file (the same backup API, no checks)
  copy       Python's shutil.copy of the file (what most services do; unsafe while the service writes)
  restore    `python -m server.backup restore FILE` (the migration lock, the snapshot checked, then the
             backup API into the live file)
  .restore   the sqlite3 shell's `.restore FILE` into the live file (no lock, no check)
Peak resident memory (ru_maxrss from wait4) of each process; the snapshot also on a file of a tenth of the
rows, to show it flat in the row count. Everything lives in a temporary directory, removed at the end.
"""

import argparse
import contextlib
import shutil
import sqlite3
import sys
from pathlib import Path

from _common import (
    PYTHON,
    ROOT,
    BenchError,
    Children,
    Samples,
    clean_environ,
    command_line,
    environment_lines,
    ratio_line,
    run_benchmark,
    table_header,
)

RUN_TIMEOUT = 600.0
SNAPSHOT = """
import sys
from server.migrations.backup import take_snapshot
from server.settings import load_settings
settings = load_settings([f"--database-url=sqlite:///{sys.argv[1]}", f"--backup-dir={sys.argv[2]}"], environ={})
snapshot = take_snapshot(settings, "0002")
print(f"in-process seconds {snapshot.seconds:.6f}")
"""
COPY = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])"


def make_database(path: Path, rows: int, children: Children) -> None:
    migrate = children.start(
        [PYTHON, str(ROOT / "run.py"), "--migrate=only"], clean_environ(DATABASE_URL=f"sqlite:///{path}"), "setup"
    )
    if migrate.process.wait(120) != 0:
        raise BenchError(f"run.py --migrate=only failed:\n{migrate.log_tail()}")
    children.stop(migrate)
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        names = (f"name {i} {'x' * (i % 40)}" for i in range(rows))
        connection.executemany("INSERT INTO my_table (name) VALUES (?)", ((name,) for name in names))


def rows_in(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        return connection.execute("SELECT count(*) FROM my_table").fetchone()[0]


class Bench:
    def __init__(self, children: Children, workdir: Path):
        self.children, self.workdir = children, workdir
        self.env = clean_environ(PYTHONPATH=str(ROOT))
        self.memory: dict[str, list[int]] = {}

    async def run(self, label: str, argv: list[str], samples: Samples) -> str:
        seconds, child = await self.children.run(argv, self.env, label, RUN_TIMEOUT)
        samples.add(seconds, child.cpu)
        self.memory.setdefault(samples.label, []).append(child.maxrss)
        return child.log()

    def fresh_dir(self, name: str) -> Path:
        directory = self.workdir / name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
        return directory

    async def snapshot(self, database: Path, samples: Samples, inside: Samples | None = None) -> Path:
        target = self.fresh_dir("snapshots")
        output = await self.run("snapshot", [PYTHON, "-c", SNAPSHOT, str(database), str(target)], samples)
        if inside is not None:  # the snapshot alone, without the interpreter's start and imports
            inside.add(float(output.rsplit("in-process seconds ", 1)[1].split()[0]))
        [path] = target.glob("*.db")
        return path

    async def dot_backup(self, database: Path, samples: Samples) -> None:
        target = self.fresh_dir("dot-backup") / "copy.db"
        await self.run("dot-backup", ["sqlite3", str(database), f".backup '{target}'"], samples)

    async def copy(self, database: Path, samples: Samples) -> None:
        target = self.fresh_dir("copy") / "copy.db"
        await self.run("copy", [PYTHON, "-c", COPY, str(database), str(target)], samples)

    async def restore(self, database: Path, snapshot: Path, samples: Samples) -> None:
        argv = [PYTHON, "-m", "server.backup", "restore", str(snapshot), f"--database-url=sqlite:///{database}"]
        await self.run("restore", argv, samples)

    async def dot_restore(self, database: Path, snapshot: Path, samples: Samples) -> None:
        await self.run("dot-restore", ["sqlite3", str(database), f".restore '{snapshot}'"], samples)


async def body(args, children: Children, workdir: Path) -> int:
    if shutil.which("sqlite3") is None:
        raise BenchError("the sqlite3 command-line shell is not on PATH (apt-get install sqlite3)")
    print("backup benchmark: SQLite snapshot and restore, side by side with the sqlite3 shell and shutil.copy")
    for line in environment_lines(f"SQLite {sqlite3.sqlite_version} (file in {workdir})"):
        print(line)
    database = workdir / "db" / "app.db"
    small = workdir / "small" / "app.db"
    make_database(database, args.rows, children)
    make_database(small, max(args.rows // 10, 1), children)
    size = database.stat().st_size
    print(f"  data            {args.rows:,} rows of my_table, {size / 2**20:.1f} MiB; {args.rounds} rounds")
    print(f"  snapshot        {command_line([PYTHON, '-c', '<take_snapshot>', str(database), 'DIR'])}")
    print()

    bench = Bench(children, workdir)
    sides = {
        "snapshot": Samples("snapshot (project), process"),
        "inside": Samples("snapshot (project), take_snapshot alone"),
        ".backup": Samples("sqlite3 .backup"),
        "copy": Samples("shutil.copy"),
        "restore": Samples("restore (python -m server.backup)"),
        ".restore": Samples("sqlite3 .restore"),
        "small": Samples(f"snapshot (project), {max(args.rows // 10, 1):,} rows"),
    }
    kept = workdir / "kept.db"  # the snapshot both restores put back
    for round_number in range(args.rounds):
        copies = [
            lambda: bench.snapshot(database, sides["snapshot"], sides["inside"]),
            lambda: bench.dot_backup(database, sides[".backup"]),
            lambda: bench.copy(database, sides["copy"]),
        ]
        if round_number % 2:
            copies.reverse()
        for copy in copies:
            await copy()
        await bench.snapshot(small, sides["small"])
        shutil.move(await bench.snapshot(database, Samples("untimed")), kept)
        restores = [
            lambda: bench.restore(database, kept, sides["restore"]),
            lambda: bench.dot_restore(database, kept, sides[".restore"]),
        ]
        if round_number % 2:
            restores.reverse()
        for restore in restores:
            await restore()
        if rows_in(database) != args.rows:
            raise BenchError(f"after restoring, the database holds {rows_in(database)} rows, not {args.rows}")

    print(f"{table_header()}   peak RSS (median)")
    for samples in sides.values():
        peaks = sorted(bench.memory.get(samples.label, []))
        print(f"{samples.row()}   {peaks[len(peaks) // 2] / 2**20:6.1f} MiB" if peaks else samples.row())
    print("  (peak RSS from wait4 includes the benchmark process's own pages at fork: the floor of every side)")
    print()
    for label, top, bottom in (
        ("snapshot / sqlite3 .backup", sides["snapshot"], sides[".backup"]),
        ("snapshot / shutil.copy", sides["snapshot"], sides["copy"]),
        ("restore / sqlite3 .restore", sides["restore"], sides[".restore"]),
    ):
        print(ratio_line(label, top, bottom, goal=None)[0])
    inside = sides["inside"].median
    print(f"\n  take_snapshot alone: {size / 2**20 / inside:.0f} MiB/s, {args.rows / inside:,.0f} rows/s")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of my_table (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every side (default 3)")
    args = parser.parse_args(argv)
    return run_benchmark("backup", "sqlite", "", lambda children, _databases, workdir: body(args, children, workdir))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
