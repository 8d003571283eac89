"""Every revision in alembic/versions/, on SQLite and on PostgreSQL: the checks a new revision is held to.

The revisions are read from Alembic's ScriptDirectory when the tests are collected, so a revision added
later is tested here without editing this file; each test that is about one revision carries its id.
"""

import datetime
import decimal
import re
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

from conftest import make_settings, run_alembic, run_async
from server.db import make_engine
from server.migrations import VERSION_TABLE, make_alembic_config
from server.migrations.lint import DIALECTS, lint_revisions, refusal
from server.migrations.upgrade import HandedOver, locked_session
from server.models import metadata
from server.settings import ROOT, normalize_database_url

SCRIPT = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
REVISIONS = list(reversed(list(SCRIPT.walk_revisions("base", "heads"))))  # oldest first
REVISION_IDS = [script.revision for script in REVISIONS]


def down_revisions(script) -> tuple[str, ...]:
    """The revisions a revision stands on: none for the first, two or more for a merge."""
    down = script.down_revision
    return () if down is None else (down,) if isinstance(down, str) else tuple(down)


# --- running alembic in-process ---------------------------------------------------------------------------


def run_command(database_url: str, alembic_command, *args, on_version_apply=None) -> None:
    """alembic.command.<alembic_command>(config, *args) as the server runs it: under the migration lock,
    on a connection handed to env.py (by hand env.py would run fileConfig on the test process's logging)."""
    settings = make_settings(database_url)
    config = make_alembic_config(settings)

    def work(connection: sa.Connection) -> None:
        connection.commit()  # env.py must get a connection outside a transaction to commit per revision
        config.attributes["handed_over"] = HandedOver(connection, on_version_apply)
        alembic_command(config, *args)

    async def locked():
        async with locked_session(settings, label="test_revisions") as connection:
            await connection.run_sync(work)

    run_async(locked)


def upgrade(database_url: str, *targets: str) -> None:
    for target in targets:
        run_command(database_url, command.upgrade, target)


def downgrade(database_url: str, target: str) -> None:
    run_command(database_url, command.downgrade, target)


def step(what: str, function, *args):
    """function(*args), or a failure that says what failed (without the traceback of this file's helpers)."""
    try:
        return function(*args)
    except Exception as exc:
        error = f"{what} failed: {type(exc).__name__}: {exc}"
    pytest.fail(error, pytrace=False)  # outside the except: no "during handling of the above exception"


def on_connection(database_url: str, work):
    """work(sync connection) on a connection of its own, committed; its result."""

    url = normalize_database_url(database_url)
    if url.get_backend_name() == "sqlite":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)  # as the server does before connecting

    async def run():
        engine = make_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                result = await connection.run_sync(work)
                await connection.commit()
                return result
        finally:
            await engine.dispose()

    return run_async(run)


def current_revisions(connection: sa.Connection) -> set[str]:
    return set(MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_heads())


# --- what is in the database ------------------------------------------------------------------------------

# Everything a revision can create in PostgreSQL's public schema, and the schemas and extensions themselves;
# the version table (and its primary key index) excepted.
_POSTGRES_OBJECTS = """
SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'S' THEN 'sequence' WHEN 'i' THEN 'index'
       WHEN 'I' THEN 'index' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' ELSE 'foreign table' END
       || ' ' || c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'i', 'I', 'v', 'm', 'f')
   AND c.relname <> :version_table
   AND NOT EXISTS (SELECT 1 FROM pg_index x
                    WHERE x.indexrelid = c.oid AND x.indrelid = to_regclass('public.' || :version_table))
UNION ALL
SELECT CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'd' THEN 'domain' WHEN 'r' THEN 'range type'
       WHEN 'm' THEN 'multirange type' WHEN 'c' THEN 'composite type' ELSE 'type' END || ' ' || t.typname
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = 'public' AND t.typcategory <> 'A'
   AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
UNION ALL
SELECT 'function ' || p.oid::regprocedure::text
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
UNION ALL
SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
UNION ALL
SELECT 'extension ' || extname FROM pg_extension
"""

# SQLite's own tables (sqlite_sequence, sqlite_stat1) cannot be dropped; the version table stays by design.
_SQLITE_OBJECTS = """
SELECT type || ' ' || name FROM sqlite_master
 WHERE tbl_name <> :version_table AND NOT (type = 'table' AND name LIKE 'sqlite\\_%' ESCAPE '\\')
"""


def database_objects(connection: sa.Connection) -> set[str]:
    """Tables, indexes, sequences, views, types, functions… found in the database, as "kind name"."""
    sql = _POSTGRES_OBJECTS if connection.dialect.name == "postgresql" else _SQLITE_OBJECTS
    return set(connection.execute(sa.text(sql), {"version_table": VERSION_TABLE}).scalars())


def schema_of(connection: sa.Connection) -> dict[str, object]:
    """The schema as comparable facts: {"column my_table.name": (type, nullable, default), …}."""
    inspector = sa.inspect(connection)
    facts: dict[str, object] = {f"object {name}": True for name in database_objects(connection)}
    for table in inspector.get_table_names():
        if table == VERSION_TABLE:
            continue
        for column in inspector.get_columns(table):
            facts[f"column {table}.{column['name']}"] = (
                column["type"].compile(dialect=connection.dialect),
                column["nullable"],
                column.get("default"),
            )
        facts[f"primary key of {table}"] = tuple(inspector.get_pk_constraint(table)["constrained_columns"])
        for index in inspector.get_indexes(table):
            facts[f"index {table}.{index['name']}"] = (tuple(index["column_names"]), bool(index["unique"]))
        for unique in inspector.get_unique_constraints(table):
            facts[f"unique constraint {table}.{unique['name']}"] = tuple(unique["column_names"])
        for key in inspector.get_foreign_keys(table):
            facts[f"foreign key {table}.{key['name']}"] = (
                tuple(key["constrained_columns"]),
                key["referred_table"],
                tuple(key["referred_columns"]),
            )
        for check in inspector.get_check_constraints(table):
            facts[f"check constraint {table}.{check['name']}"] = check["sqltext"]
    return facts


def differences(expected: dict[str, object], found: dict[str, object]) -> list[str]:
    lines = [f"left behind: {key} {found[key]!r}" for key in sorted(found.keys() - expected.keys())]
    lines += [f"missing: {key} {expected[key]!r}" for key in sorted(expected.keys() - found.keys())]
    lines += [
        f"changed: {key}: expected {expected[key]!r}, found {found[key]!r}"
        for key in sorted(expected.keys() & found.keys())
        if expected[key] != found[key]
    ]
    return lines


# --- the history ------------------------------------------------------------------------------------------


def test_the_history_has_exactly_one_head():
    heads = SCRIPT.get_heads()
    assert len(heads) == 1, (
        f"alembic/versions/ has {len(heads)} heads {sorted(heads)}: give the new revision the current head"
        " as down_revision, or join the branches with `alembic merge heads`"
    )
    assert REVISIONS, "alembic/versions/ holds no revision"


def test_base_to_head_in_one_go_applies_every_revision_in_order(database_url):
    applied: list[str] = []

    def on_version_apply(*, step, **_):
        applied.append(step.up_revision_id)

    run_command(database_url, command.upgrade, "heads", on_version_apply=on_version_apply)
    assert applied == REVISION_IDS
    assert on_connection(database_url, current_revisions) == set(SCRIPT.get_heads())


# --- the lint ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("revision", REVISIONS, ids=REVISION_IDS)
def test_revision_passes_the_lint(revision, dialect):
    """Judged as if deployed alone, as `python -m server.lint --all` in CI: no unaccepted error."""
    findings = lint_revisions([revision], dialect, each_alone=True, metadata=metadata)
    assert refusal(findings) is None, "\n".join(map(str, findings))


# --- each revision up, down and up again ------------------------------------------------------------------


@pytest.mark.parametrize("revision", REVISIONS, ids=REVISION_IDS)
def test_stairway_upgrade_downgrade_upgrade(database_url, revision):
    """Up to the revision, one step down, up again: each step works, and the downgrade undoes exactly it."""
    rev = revision.revision
    before = down_revisions(revision)

    upgrade(database_url, *before)
    schema_before = on_connection(database_url, schema_of)

    step(f"upgrade to revision {rev}", upgrade, database_url, rev)
    assert on_connection(database_url, current_revisions) == {rev}
    schema_after = on_connection(database_url, schema_of)

    step(f"downgrade of revision {rev}", downgrade, database_url, "-1")
    assert on_connection(database_url, current_revisions) == set(before), f"revision {rev} downgraded to the wrong one"
    undone = differences(schema_before, on_connection(database_url, schema_of))
    assert not undone, f"the downgrade of revision {rev} does not undo its upgrade:\n" + "\n".join(undone)

    step(f"upgrade to revision {rev} after its downgrade", upgrade, database_url, rev)
    assert on_connection(database_url, current_revisions) == {rev}
    redone = differences(schema_after, on_connection(database_url, schema_of))
    assert not redone, f"revision {rev} upgraded again gives another schema than the first time:\n" + "\n".join(redone)


def test_downgrade_from_head_to_base_leaves_nothing_behind(database_url):
    found_before = on_connection(database_url, database_objects)  # whatever a fresh database comes with
    upgrade(database_url, "heads")
    downgrade(database_url, "base")

    assert on_connection(database_url, current_revisions) == set()
    left = sorted(on_connection(database_url, database_objects) - found_before)
    assert not left, "downgrading from head to base left behind: " + ", ".join(left)


# --- models and revisions agree ---------------------------------------------------------------------------


def test_models_match_the_schema_at_head(database_url):
    upgrade(database_url, "heads")

    def compare(connection):
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE, "target_metadata": metadata}
        )
        return compare_metadata(context, metadata)

    diff = on_connection(database_url, compare)
    assert not diff, (
        "server/models.py and the schema the revisions build differ (write a revision, e.g. with"
        " `alembic revision --autogenerate`):\n" + "\n".join(map(repr, diff))
    )


def test_alembic_check_passes_after_alembic_upgrade_head(database_url, tmp_path):
    upgraded = run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=database_url)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr

    checked = run_alembic("check", cwd=tmp_path, DATABASE_URL=database_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- rows survive every upgrade ---------------------------------------------------------------------------

TEXT_SAMPLE = "Zoë's \"quoted\" 'single' ☃ 😀 \\ %s %% ; -- "
WHEN = datetime.datetime(2001, 2, 3, 4, 5, 6)
INTEGER_MAX = {sa.SmallInteger: 2**15 - 1, sa.BigInteger: 2**63 - 1, sa.Integer: 2**31 - 1}


def sample_value(type_: sa.types.TypeEngine, seed: int):
    """A value of the column type, different for each seed, near the type's limits where it has them."""
    if isinstance(type_, sa.Enum):
        return type_.enums[seed % len(type_.enums)]
    if isinstance(type_, sa.JSON):
        return {"seed": seed, "text": TEXT_SAMPLE, "list": [1, None, True, 2.5]}
    try:
        python_type = type_.python_type
    except NotImplementedError:
        python_type = None
    if python_type is bool:
        return seed % 2 == 1
    if python_type is int:
        largest = next(value for kind, value in INTEGER_MAX.items() if isinstance(type_, kind))
        return largest - seed
    if python_type is str:
        length = getattr(type_, "length", None) or 100
        return (f"{seed} " + TEXT_SAMPLE * (length // len(TEXT_SAMPLE) + 1))[:length]
    if python_type is datetime.datetime:
        value = WHEN.replace(microsecond=123456 + seed)
        return value.replace(tzinfo=datetime.UTC) if getattr(type_, "timezone", False) else value
    if python_type is datetime.date:
        return WHEN.date() + datetime.timedelta(days=seed)
    if python_type is datetime.time:
        value = WHEN.time().replace(microsecond=seed)
        return value.replace(tzinfo=datetime.UTC) if getattr(type_, "timezone", False) else value
    if python_type is datetime.timedelta:
        return datetime.timedelta(days=seed, seconds=7, microseconds=8)
    if python_type is float:
        return seed + 0.5
    if python_type is decimal.Decimal:
        scale = type_.scale if getattr(type_, "scale", None) is not None else 2
        return decimal.Decimal(seed) + decimal.Decimal("0.25").quantize(decimal.Decimal(1).scaleb(-scale))
    if python_type is bytes:
        return bytes([0, 255, seed]) + b"'\"\\"
    if python_type is uuid.UUID:
        return uuid.UUID(int=seed)
    if python_type is list:
        return [sample_value(type_.item_type, seed)]
    pytest.fail(f"no sample value for the column type {type_!r}: teach sample_value() about it", pytrace=False)


class SampleRowRefused(Exception):
    """The database refused a row made from its own column types: a NOT NULL key it does not fill in itself
    (on SQLite only INTEGER PRIMARY KEY is, not BIGINT), a CHECK constraint, a trigger…"""


def is_generated_key(table: sa.Table, column: sa.Column) -> bool:
    """A primary key the database fills in itself (SERIAL, IDENTITY, SQLite's INTEGER PRIMARY KEY)."""
    return column.primary_key and (
        column is table.autoincrement_column or column.identity is not None or column.server_default is not None
    )


def reflect(connection: sa.Connection) -> sa.MetaData:
    reflected = sa.MetaData()
    reflected.reflect(connection)
    return reflected


def write_sample_rows(connection: sa.Connection) -> dict[str, list[dict]]:
    """Two rows in every table: one with every column given, one with only what must be; as stored."""
    written: dict[str, list[dict]] = {}
    for table in reflect(connection).sorted_tables:
        if table.name == VERSION_TABLE:
            continue
        rows = written[table.name] = []
        for seed, every_column in ((1, True), (2, False)):
            values = {}
            for column in table.columns:
                if is_generated_key(table, column):
                    continue
                if not every_column and (column.nullable or column.server_default is not None):
                    continue
                values[column.name] = sample_value(column.type, seed)
                for key in column.foreign_keys:  # refer to a row written in the referred table
                    referred = written.get(key.column.table.name)
                    if referred and len(referred) >= seed:
                        values[column.name] = referred[seed - 1][key.column.name]
            try:
                inserted = connection.execute(table.insert().values(values))
            except sa.exc.DBAPIError as exc:
                raise SampleRowRefused(f"table {table.name} refused {values!r}: {exc.orig!r}") from None
            key = inserted.inserted_primary_key
            if table.primary_key.columns and key is not None and None not in key:
                where = [column == value for column, value in zip(table.primary_key.columns, key, strict=True)]
                rows.append(dict(connection.execute(sa.select(table).where(*where)).mappings().one()))
            else:
                rows.append(values)
    return written


def same(expected, found) -> bool:
    if isinstance(expected, datetime.datetime) and isinstance(found, datetime.datetime):
        # A naive datetime is read as UTC: SQLite keeps no zone, PostgreSQL answers timestamptz in UTC.
        def utc(value):
            return value.replace(tzinfo=datetime.UTC) if value.tzinfo is None else value

        return utc(expected) == utc(found)
    return expected == found


def missing_rows(written: dict[str, list[dict]]):
    """Rows that are no longer there, compared on the columns that still exist."""

    def check(connection: sa.Connection) -> list[str]:
        tables = reflect(connection).tables
        gone = []
        for name, rows in written.items():
            if name not in tables:
                continue  # a revision that drops a table means to
            stored = [dict(row) for row in connection.execute(sa.select(tables[name])).mappings()]
            for row in rows:
                kept = {column: value for column, value in row.items() if column in tables[name].columns}
                if not any(all(same(value, now[column]) for column, value in kept.items()) for now in stored):
                    gone.append(f"{name}: {kept!r} (the table now holds {stored!r})")
        return gone

    return check


@pytest.mark.parametrize("revision", REVISIONS, ids=REVISION_IDS)
def test_rows_written_before_a_revision_survive_its_upgrade(database_url, revision):
    before = down_revisions(revision)
    at = " + ".join(before) or "base"
    upgrade(database_url, *before)
    written = step(f"writing sample rows at {at}", on_connection, database_url, write_sample_rows)

    step(f"upgrade to revision {revision.revision} over rows written at {at}", upgrade, database_url, revision.revision)

    gone = on_connection(database_url, missing_rows(written))
    assert not gone, f"rows written at {at} lost or changed by the upgrade to {revision.revision}:\n" + "\n".join(gone)


# --- offline SQL ------------------------------------------------------------------------------------------


def test_upgrade_sql_renders_every_revision_for_postgresql_without_a_database(tmp_path):
    rendered = run_alembic(
        "upgrade", "head", "--sql", cwd=tmp_path, DATABASE_URL="postgresql://nobody@127.0.0.1:1/x", DB_WAIT=0
    )
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    for rev in REVISION_IDS:
        assert re.search(rf"^-- Running upgrade .*-> {re.escape(rev)}$", rendered.stdout, re.M), (
            f"revision {rev} is not in `alembic upgrade head --sql`:\n{rendered.stdout}"
        )
    assert "CREATE TABLE my_table" in rendered.stdout, rendered.stdout
