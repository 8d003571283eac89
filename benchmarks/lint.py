"""Revision lint: our findings vs squawk on `alembic upgrade --sql` output, on a hand-written corpus; lint time."""

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import DEFAULT_POSTGRES_URL, ROOT, BenchError, async_url, environment_lines, run_benchmark
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from startup import write_extra_revisions

from server.migrations.lint import RULES, lint_revisions
from server.migrations.upgrade import HandedOver
from server.settings import load_settings

CORPUS = Path(__file__).resolve().parent / "lint_corpus"
BASE = "c000"  # the schema the corpus revisions start from: applied for real, not judged
SQUAWK = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
# squawk's ids for the rules we share, mapped onto ours (squawk names the two NOT NULL rules the other way round,
# and splits foreign keys from other constraints).
SQUAWK_TO_OURS = {
    "adding-required-field": "adding-not-nullable-field",
    "adding-not-nullable-field": "setting-not-nullable-field",
    "adding-field-with-default": "adding-field-with-volatile-default",
    "adding-serial-primary-key-field": "adding-field-with-volatile-default",
    "adding-foreign-key-constraint": "constraint-missing-not-valid",
    **{
        rule: rule
        for rule in RULES
        if rule
        in {
            "changing-column-type",
            "constraint-missing-not-valid",
            "disallowed-unique-constraint",
            "require-concurrent-index-creation",
            "require-concurrent-index-deletion",
            "ban-concurrent-index-creation-in-transaction",
            "ban-drop-column",
            "ban-drop-table",
            "renaming-column",
            "renaming-table",
        }
    },
}
SHARED = set(SQUAWK_TO_OURS.values())


def corpus_config(**attributes) -> Config:
    """Our env.py, with the corpus as the only version location."""
    config = Config(stdout=io.StringIO())
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.set_main_option("version_locations", str(CORPUS))
    config.set_main_option("path_separator", "os")
    config.attributes.update(attributes)
    return config


def corpus_scripts() -> list:
    scripts = ScriptDirectory.from_config(corpus_config()).walk_revisions()
    return sorted((s for s in scripts if s.revision != BASE), key=lambda s: s.revision)


def render_sql(revision: str) -> str | None:
    """`alembic upgrade c000:<revision> --sql` for PostgreSQL, as a squawk user would feed it; None when it fails."""
    output = io.StringIO()
    settings = load_settings(["--database-url=postgresql://nobody@127.0.0.1:1/none"], environ={})
    # handed_over=None: env.py skips fileConfig (which would reconfigure this process's logging) and, offline,
    # never uses the connection.
    config = corpus_config(settings=settings, handed_over=None)
    config.output_buffer = output
    try:
        command.upgrade(config, f"{BASE}:{revision}", sql=True)
    except Exception:  # offline rendering cannot introspect; any failure means squawk sees nothing
        return None
    return output.getvalue()


def squawk_rules(sql: str, workdir: Path, revision: str) -> set[str]:
    path = workdir / f"{revision}.sql"
    path.write_text(sql)
    ran = subprocess.run(
        [SQUAWK, "--reporter=json", "--pg-version=15", str(path)], capture_output=True, text=True, timeout=60
    )
    if ran.returncode not in (0, 1) or not ran.stdout.strip():
        raise BenchError(f"squawk failed on {revision}: {ran.stderr.strip()}")
    return {SQUAWK_TO_OURS[item["rule_name"]] for item in json.loads(ran.stdout) if item["rule_name"] in SQUAWK_TO_OURS}


def score(rows, dangerous: bool):
    """(caught, missed, false alarms) over the revisions of one set; rows: (expected, reported)."""
    caught = missed = false_alarms = 0
    for expected, reported in rows:
        if dangerous:
            caught += expected <= reported
            missed += not expected <= reported
        false_alarms += bool(reported - expected)
    return caught, missed, false_alarms


def median_ms(work, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def on_connection(url: str, work):
    engine = create_async_engine(async_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            result = await connection.run_sync(work)
            await connection.commit()
            return result
    finally:
        await engine.dispose()


def upgrade_with(config: Config, target: str):
    def work(connection):
        connection.commit()  # env.py commits per revision on a connection handed over outside a transaction
        config.attributes["handed_over"] = HandedOver(connection)  # as the server hands it to env.py
        command.upgrade(config, target)

    return work


async def bench(options, databases, workdir: Path) -> int:
    scripts = corpus_scripts()
    url = await databases.create()
    settings = load_settings([f"--database-url={url}"], environ={})
    await on_connection(url, upgrade_with(corpus_config(settings=settings), BASE))

    # Ours: the whole corpus pending on a real database at c000, each revision judged as if deployed alone.
    findings = await on_connection(
        url, lambda connection: lint_revisions(scripts, "postgresql", connection=connection, each_alone=True)
    )
    ours = {s.revision: set() for s in scripts}
    for finding in findings:
        if finding.accepted is None:
            ours[finding.revision].add(finding.rule)

    squawk, unrendered = {}, []
    for script in scripts:
        sql = render_sql(script.revision)
        if sql is None:
            unrendered.append(script.revision)
        squawk[script.revision] = squawk_rules(sql, workdir, script.revision) if sql is not None else set()

    print("\nper revision (expected | ours | squawk on --sql), differences only:")
    for script in scripts:
        expected = set(script.module.expected)
        shared_expected = expected & SHARED
        if ours[script.revision] != expected or squawk[script.revision] != shared_expected:
            print(
                f"  {script.revision} {script.doc.splitlines()[0][:60]:60} | {sorted(expected) or '-'}"
                f" | ours {sorted(ours[script.revision]) or '-'} | squawk {sorted(squawk[script.revision]) or '-'}"
                + (" (did not render)" if script.revision in unrendered else "")
            )

    dangerous = [s for s in scripts if s.module.expected]
    safe = [s for s in scripts if not s.module.expected]
    print(f"\ncorpus: {len(dangerous)} dangerous, {len(safe)} safe revisions in {CORPUS.relative_to(ROOT)}")
    print(f"squawk: `alembic upgrade {BASE}:<rev> --sql` did not render for {len(unrendered)}: {', '.join(unrendered)}")
    print(f"\n{'':28} {'caught':>8} {'missed':>8} {'false alarms':>14}")
    for name, reported, known in (("ours", ours, None), ("squawk (--sql)", squawk, SHARED)):
        for label, group, is_dangerous in (("dangerous", dangerous, True), ("safe", safe, False)):
            rows = [(set(s.module.expected) & (known or set(s.module.expected)), reported[s.revision]) for s in group]
            caught, missed, false_alarms = score(rows, is_dangerous)
            shown = (f"{caught}/{len(group)}", str(missed)) if is_dangerous else ("", "")
            print(f"{name + ' ' + label:28} {shown[0]:>8} {shown[1]:>8} {f'{false_alarms}/{len(group)}':>14}")
    print("(squawk judged only on the rules it shares with us; 'caught' = every expected rule reported)")

    # Lint time: 200 trivial pending revisions on a database at head, as a starting server would lint them.
    ini, _ = write_extra_revisions(workdir / "t200", 200)
    timed = await databases.create()
    timed_settings = load_settings([f"--database-url={timed}"], environ={})
    timed_config = Config(str(ini), stdout=io.StringIO())
    timed_config.attributes.update(settings=timed_settings)
    await on_connection(timed, upgrade_with(timed_config, "0002"))
    pending = [s for s in ScriptDirectory.from_config(timed_config).walk_revisions() if s.revision.startswith("b")]
    pending.reverse()

    def timings(connection):
        lint_revisions(pending, "postgresql", connection=connection)  # warm-up
        many = median_ms(lambda: lint_revisions(pending, "postgresql", connection=connection), options.rounds)
        none = median_ms(lambda: lint_revisions([], "postgresql", connection=connection), options.rounds)
        corpus = median_ms(lambda: lint_revisions(scripts, "postgresql", connection=connection), options.rounds)
        return many, none, corpus

    many, none, corpus = await on_connection(timed, timings)
    print(f"\nlint time, median of {options.rounds} (scripts already loaded, as the migrator has them):")
    print(f"  {len(pending)} pending revisions: {many:8.1f} ms   (goal ≤ 100 ms)  {'ok' if many <= 100 else 'OVER'}")
    print(f"  0 pending revisions:   {none:8.3f} ms   (goal 0 ms)")
    print(f"  the {len(scripts)}-revision corpus: {corpus:8.1f} ms")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--rounds", type=int, default=11)
    options = parser.parse_args(argv)
    if not Path(SQUAWK).exists():
        print("squawk not found: pip install squawk-cli (into this virtualenv)", file=sys.stderr)
        return 2
    version = importlib.metadata.version("squawk-cli")
    for line in environment_lines("PostgreSQL at " + options.postgres_url.rsplit("@", 1)[-1], ["pglast"]):
        print(line)
    print(f"squawk-cli {version}")
    with contextlib.suppress(KeyError):
        os.environ.pop("DATABASE_URL")
    return run_benchmark("lint", "postgresql", options.postgres_url, lambda _c, db, wd: bench(options, db, wd))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
