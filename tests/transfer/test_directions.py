"""Every direction between SQLite and PostgreSQL, held to the same guarantees: rows arrive exactly, the
checksums match, the next id follows, and a signal in the middle leaves the target as it was."""

import contextlib
import datetime
import re
import signal
import sqlite3
import time

import pytest
from sqlalchemy.engine import make_url

from conftest import (
    AWKWARD_MOMENTS,
    AWKWARD_NAMES,
    BIG_ROWS,
    assert_one_clear_error,
    make_source,
    pg_execute,
    query,
    start_transfer,
    stop_process,
    stored_rows,
    transfer,
    wait_for,
)

HEAD = "0002"
DIRECTIONS = [("sqlite", "postgres"), ("postgres", "postgres"), ("postgres", "sqlite"), ("sqlite", "sqlite")]
FIGURES = re.compile(r"^my_table\s+([\d,]+)\s+([\d,]+)\s+(\w+)\s+(\w+)\s+match$", re.MULTILINE)


def _direction(source: str, target: str):
    marks = [pytest.mark.postgres] if "postgres" in (source, target) else []
    return pytest.param((source, target), id=f"{source}-to-{target}", marks=marks)


class Databases:
    """Fresh databases of either kind for one test."""

    def __init__(self, request, tmp_path):
        self.request, self.tmp_path, self.made = request, tmp_path, 0

    def new(self, kind: str) -> str:
        if kind == "postgres":
            return self.request.getfixturevalue("new_postgres_url")()
        self.made += 1
        path = self.tmp_path / f"sqlite-{self.made}" / "app.db"
        path.parent.mkdir(parents=True)
        return f"sqlite:///{path}"


@pytest.fixture
def databases(request, tmp_path) -> Databases:
    return Databases(request, tmp_path)


@pytest.fixture(params=[_direction(*d) for d in DIRECTIONS])
def direction(request) -> tuple[str, str]:
    return request.param


def awkward_rows(kind: str, count: int) -> tuple[list[tuple], list[tuple]]:
    """Rows to load into a source of `kind` (timestamps as SQLite text or datetimes), and what they mean."""
    rows, expected = [], []
    for i in range(1, count + 1):
        name = AWKWARD_NAMES[i % len(AWKWARD_NAMES)][:50]
        text, moment = AWKWARD_MOMENTS[i % len(AWKWARD_MOMENTS)]
        rows.append((i * 3, name, text if kind == "sqlite" else moment))  # ids with gaps
        expected.append((i * 3, name, moment))
    return rows, expected


def insert_next(url: str) -> int:
    """Insert a row without an id, as the server does: the id the database gave it."""
    if make_url(url).get_backend_name() == "postgresql":
        return query(url, "INSERT INTO my_table (name) VALUES ('next') RETURNING id")[0][0]
    with contextlib.closing(sqlite3.connect(make_url(url).database)) as connection, connection:
        return connection.execute("INSERT INTO my_table (name) VALUES ('next')").lastrowid


def versions(url: str) -> list[tuple]:
    sql = "SELECT version_num FROM alembic_version"
    if make_url(url).get_backend_name() == "postgresql":
        return query(url, sql)
    with contextlib.closing(sqlite3.connect(make_url(url).database)) as connection:
        return connection.execute(sql).fetchall()


def target_is_free(url: str) -> bool:
    """Nobody holds the target's table: a writer gets it at once."""
    if make_url(url).get_backend_name() == "postgresql":
        pg_execute(url, "BEGIN; SET LOCAL lock_timeout = 2000; LOCK TABLE my_table IN ACCESS EXCLUSIVE MODE; END")
        return True
    with contextlib.closing(sqlite3.connect(make_url(url).database, timeout=2, isolation_level=None)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    return True


def test_awkward_rows_arrive_exactly_and_the_next_id_follows(direction, databases):
    source_kind, target_kind = direction
    source, target = databases.new(source_kind), databases.new(target_kind)
    rows, expected = awkward_rows(source_kind, 3000)
    make_source(source, rows)

    result = transfer(source, target, "--batch-size=700")  # batches that do not divide the rows

    assert result.returncode == 0, result.stderr
    figures = FIGURES.search(result.stdout)
    assert figures and figures.group(1) == figures.group(2) == "3,000", result.stdout
    assert figures.group(3) == figures.group(4), result.stdout
    assert stored_rows(target) == expected
    assert stored_rows(source) == expected  # read-only
    assert versions(target) == [(HEAD,)]
    assert insert_next(target) == 9001
    assert "committed: 1 table(s), 3,000 rows" in result.stderr
    assert "Traceback" not in result.stderr and " ERROR [" not in result.stderr


# A target that stores something other than what it was sent: one name changed on its way in.
ALTER_ONE_NAME = {
    "postgres": """
        CREATE FUNCTION alter_one_name() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.id = 3000 THEN NEW.name := NEW.name || '!'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER alter_one_name BEFORE INSERT ON my_table FOR EACH ROW EXECUTE FUNCTION alter_one_name();
    """,
    "sqlite": """
        CREATE TRIGGER alter_one_name AFTER INSERT ON my_table WHEN NEW.id = 3000
        BEGIN UPDATE my_table SET name = name || '!' WHERE id = NEW.id; END
    """,
}


def test_a_target_that_stores_one_value_otherwise_fails_verification_and_is_left_as_it_was(direction, databases):
    source_kind, target_kind = direction
    source, target = databases.new(source_kind), databases.new(target_kind)
    rows, _ = awkward_rows(source_kind, 2000)
    make_source(source, rows)
    make_source(target)
    if target_kind == "postgres":
        pg_execute(target, ALTER_ONE_NAME["postgres"])
    else:
        with contextlib.closing(sqlite3.connect(make_url(target).database)) as connection, connection:
            connection.execute(ALTER_ONE_NAME["sqlite"])

    result = transfer(source, target)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "MISMATCH" in result.stdout, result.stdout
    assert_one_clear_error(result.stderr, "verification failed for my_table")
    assert stored_rows(target) == []


@pytest.mark.postgres
def test_a_round_trip_through_both_systems_comes_back_equal(databases):
    start = databases.new("sqlite")
    rows, expected = awkward_rows("sqlite", 2000)
    make_source(start, rows)
    hops = [start, databases.new("postgres"), databases.new("sqlite"), databases.new("postgres")]
    checksums = []
    for source, target in zip(hops, hops[1:], strict=False):
        result = transfer(source, target)
        assert result.returncode == 0, result.stderr
        figures = FIGURES.search(result.stdout)
        assert figures, result.stdout
        checksums += [figures.group(3), figures.group(4)]
    assert len(set(checksums)) == 1, checksums  # the end holds what the start held, by checksum
    assert stored_rows(hops[-1]) == stored_rows(start) == expected  # and row by row


@pytest.fixture
def big_source_of(request):
    """big_source_of(kind) -> a source of BIG_ROWS rows, made once per session."""
    return lambda kind: request.getfixturevalue("big_source" if kind == "sqlite" else "big_postgres_source")


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_in_the_middle_of_the_copy_leaves_the_target_as_it_was(
    direction, databases, big_source_of, tmp_path, signum, status
):
    source_kind, target_kind = direction
    source, target = big_source_of(source_kind), databases.new(target_kind)
    moments = [datetime.datetime(2026, 1, day, tzinfo=datetime.UTC) for day in (1, 2)]
    kept = [(day, f"kept {day}", m if target_kind == "postgres" else str(m)[:19]) for day, m in enumerate(moments, 1)]
    make_source(target, kept)
    before = stored_rows(target)
    log = tmp_path / "transfer.log"
    # --replace: the old rows are gone inside the transaction when the signal comes, and must come back.
    process = start_transfer(source, target, log, "--replace", "--batch-size=1000")
    try:
        wait_for(lambda: f"my_table: copying {BIG_ROWS:,} rows" in log.read_text(), 60, "the copy to start")
        time.sleep(0.2)
        process.send_signal(signum)
        assert process.wait(20) == status, log.read_text()
    finally:
        stop_process(process)
    output = log.read_text()
    assert "committed:" not in output, output
    assert_one_clear_error(output, f"interrupted by {signal.Signals(signum).name}", "nothing was committed")
    assert target_is_free(target)
    assert stored_rows(target) == before
    assert versions(target) == [(HEAD,)]
