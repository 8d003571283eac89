"""The revision lint engine and `python -m server.lint`, on real revision files and real databases."""

import subprocess
import sys

import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from test_revisions import on_connection, schema_of, upgrade

from conftest import clean_environ, query, upgrade_in_process
from server.migrations.lint import RULES, lint_revisions, refusal
from server.migrations.lint.capture import (
    RecordingBatchOperations,
    installed_as_op,
    is_read,
    sqlite_batch_copies_table,
)
from server.models import metadata
from server.settings import ROOT

SHIPPED = {"0001", "0002"}

# Each error-level rule broken on the existing table my_table (id, name varchar(50), created_at), written with
# op.* and as raw SQL; "{table}" lets the same operation run on a table created earlier in the pending set.
BREAKING = {
    "adding-not-nullable-field": (
        'op.add_column("{table}", sa.Column("age", sa.Integer(), nullable=False))',
        "ALTER TABLE {table} ADD COLUMN age integer NOT NULL",
    ),
    "adding-field-with-volatile-default": (
        'op.add_column("{table}", sa.Column("token", sa.Uuid(), server_default=sa.text("gen_random_uuid()")))',
        "ALTER TABLE {table} ADD COLUMN score float DEFAULT random()",
    ),
    "changing-column-type": (
        'op.alter_column("{table}", "name", type_=sa.Integer(), existing_type=sa.String(50))',
        "ALTER TABLE {table} ALTER COLUMN name TYPE varchar(20)",
    ),
    "setting-not-nullable-field": (
        'op.alter_column("{table}", "name", nullable=False, existing_type=sa.String(50))',
        "ALTER TABLE {table} ALTER COLUMN name SET NOT NULL",
    ),
    "require-concurrent-index-creation": (
        'op.create_index("ix_name", "{table}", ["name"])',
        "CREATE INDEX ix_name ON {table} (name)",
    ),
    "constraint-missing-not-valid": (
        'op.create_check_constraint("ck_id", "{table}", "id > 0")',
        "ALTER TABLE {table} ADD CONSTRAINT ck_id CHECK (id > 0)",
    ),
    "disallowed-unique-constraint": (
        'op.create_unique_constraint("uq_name", "{table}", ["name"])',
        "ALTER TABLE {table} ADD CONSTRAINT uq_name UNIQUE (name)",
    ),
    "ban-concurrent-index-creation-in-transaction": (
        'op.create_index("ix_name", "{table}", ["name"], postgresql_concurrently=True)',
        "CREATE INDEX CONCURRENTLY ix_name ON {table} (name)",
    ),
    "ban-drop-column": (
        'op.drop_column("{table}", "name")',
        "ALTER TABLE {table} DROP COLUMN name",
    ),
    "ban-drop-table": (
        'op.drop_table("{table}")',
        "DROP TABLE {table}",
    ),
    "renaming-column": (
        'op.alter_column("{table}", "name", new_column_name="title")',
        "ALTER TABLE {table} RENAME COLUMN name TO title",
    ),
    "renaming-table": (
        'op.rename_table("{table}", "things")',
        "ALTER TABLE {table} RENAME TO things",
    ),
}
ERROR_RULES = sorted(rule.id for rule in RULES.values() if rule.level == "error" and rule.id in BREAKING)
FORMS = {"op": 0, "sql": 1}
CREATE_FRESH = """
op.create_table(
    "fresh",
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("name", sa.String(50), nullable=True),
)
"""


def upgrade_code(rule: str, form: str, table: str = "my_table") -> str:
    code = BREAKING[rule][FORMS[form]].format(table=table)
    return code if form == "op" else f"op.execute({code!r})"


def pending(ini) -> list:
    """The test's own revisions (after the shipped ones), oldest first."""
    scripts = reversed(list(ScriptDirectory.from_config(Config(str(ini))).walk_revisions()))
    return [script for script in scripts if script.revision not in SHIPPED]


def lint(ini, dialect="postgresql", **options):
    return lint_revisions(pending(ini), dialect, metadata=metadata, **options)


def unaccepted(findings) -> set[str]:
    return {finding.rule for finding in findings if finding.accepted is None}


# --- each rule: caught, accepted with a reason, refused without one -------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("rule", ERROR_RULES)
def test_a_revision_breaking_a_rule_is_refused(extra_revisions, rule, form):
    ini, add = extra_revisions
    add("0003", "0002", upgrade_code(rule, form))

    findings = lint(ini)

    assert unaccepted(findings) == {rule}, [str(f) for f in findings]
    line = refusal(findings)
    assert line is not None and "0003" in line and rule in line and "lint_ignore" in line and "--lint=warn" in line
    assert "\n" not in line


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("rule", ERROR_RULES)
def test_lint_ignore_with_a_reason_accepts_the_finding(extra_revisions, rule, form):
    ini, add = extra_revisions
    add("0003", "0002", upgrade_code(rule, form), imports=f'lint_ignore = {{"{rule}": "the table is tiny"}}')

    findings = lint(ini)

    assert [(f.rule, f.accepted) for f in findings] == [(rule, "the table is tiny")]
    assert refusal(findings) is None
    assert str(findings[0]).endswith("(accepted: the table is tiny)")


@pytest.mark.parametrize("reason", ['""', '"  "', "None"], ids=["empty", "blank", "None"])
@pytest.mark.parametrize("rule", ERROR_RULES)
def test_lint_ignore_without_a_reason_is_refused(extra_revisions, rule, reason):
    ini, add = extra_revisions
    add("0003", "0002", upgrade_code(rule, "op"), imports=f'lint_ignore = {{"{rule}": {reason}}}')

    findings = lint(ini)

    assert unaccepted(findings) == {rule, "lint-ignore-without-reason"}
    assert "lint-ignore-without-reason" in refusal(findings)


@pytest.mark.parametrize(
    "code, rule",
    [
        ('op.execute(sa.text("DROP TABLE my_table"))', "ban-drop-table"),
        ('op.execute(sa.schema.DropTable(sa.Table("my_table", sa.MetaData())))', "ban-drop-table"),
        ('op.execute(sa.text("ALTER TABLE my_table DROP COLUMN name WHERE :x").bindparams(x=1))', "unclassified-sql"),
    ],
    ids=["text", "construct", "not postgresql"],
)
def test_sqlalchemy_constructs_given_to_execute_are_compiled_for_postgresql_and_judged(extra_revisions, code, rule):
    ini, add = extra_revisions
    add("0003", "0002", code)

    assert unaccepted(lint(ini)) == {rule}


@pytest.mark.parametrize(
    "code",
    [
        'op.create_primary_key("pk_events", "events", ["id"])',
        'op.execute("ALTER TABLE events ADD PRIMARY KEY (id)")',
        'op.execute("ALTER TABLE events ADD COLUMN id serial PRIMARY KEY")',
    ],
    ids=["op", "sql", "sql column"],
)
def test_a_primary_key_added_to_an_existing_table_is_refused(extra_revisions, code):
    ini, add = extra_revisions
    add("0003", "0002", f'op.execute("CREATE TABLE events AS SELECT 1 AS id")\n{code}')
    add("0004", "0003", code.replace("events", "my_table"))

    findings = lint(ini)

    assert [(f.revision, f.rule) for f in findings if f.rule == "disallowed-unique-constraint"] == [
        ("0004", "disallowed-unique-constraint")
    ], [str(f) for f in findings]


# --- new tables -----------------------------------------------------------------------------------------

ON_NEW_TABLE_HARMLESS = [rule for rule in ERROR_RULES if rule != "ban-concurrent-index-creation-in-transaction"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("rule", ON_NEW_TABLE_HARMLESS)
def test_the_same_operation_on_a_table_created_earlier_in_the_pending_set_passes(extra_revisions, rule, form):
    ini, add = extra_revisions
    add("0003", "0002", CREATE_FRESH)
    add("0004", "0003", upgrade_code(rule, form, table="fresh"))

    assert lint(ini) == []
    # Judged as if deployed alone (`--all`), 0004 works on a table that already exists.
    assert unaccepted(lint(ini, each_alone=True)) == {rule}


def test_a_table_created_in_the_same_revision_is_new(extra_revisions):
    ini, add = extra_revisions
    add("0003", "0002", CREATE_FRESH + upgrade_code("require-concurrent-index-creation", "op", table="fresh"))

    assert lint(ini, each_alone=True) == []


# --- what is not an error ---------------------------------------------------------------------------------

SAFE = {
    "stable default": 'op.add_column("my_table", sa.Column("seen", sa.DateTime(), server_default=sa.func.now(), '
    "nullable=False))",
    "nullable column": 'op.add_column("my_table", sa.Column("note", sa.Text()))',
    "varchar widening": 'op.alter_column("my_table", "name", type_=sa.String(200), existing_type=sa.String(50))',
    "varchar to text": 'op.alter_column("my_table", "name", type_=sa.Text(), existing_type=sa.String(50))',
    "concurrent index": "with op.get_context().autocommit_block():\n"
    '    op.create_index("ix_name", "my_table", ["name"], postgresql_concurrently=True)',
    "not valid check": 'op.create_check_constraint("ck_id", "my_table", "id > 0", postgresql_not_valid=True)',
    "core update": 'op.execute(sa.table("my_table", sa.column("name")).update().values(name="x"))',
    "backfill": 'op.execute("UPDATE my_table SET name = upper(name) WHERE id < 1000")',
    "sql widening": 'op.execute("ALTER TABLE my_table ALTER COLUMN name TYPE varchar(80)")',
    "sql not valid then validate": 'op.execute("ALTER TABLE my_table ADD CONSTRAINT ck CHECK (id > 0) NOT VALID; '
    'ALTER TABLE my_table VALIDATE CONSTRAINT ck")',
}


@pytest.mark.parametrize("code", SAFE.values(), ids=SAFE.keys())
def test_safe_operations_have_no_findings(extra_revisions, code):
    ini, add = extra_revisions
    add("0003", "0002", code)

    assert lint(ini) == []


def test_sql_the_lint_cannot_classify_is_a_warning_not_a_pass(extra_revisions):
    ini, add = extra_revisions
    add("0003", "0002", 'op.execute("VACUUM my_table")\nop.execute("this is not sql")')

    findings = lint(ini)

    assert [(f.rule, f.level) for f in findings] == [("unclassified-sql", "warning")] * 2
    assert refusal(findings) is None


def test_a_revision_that_cannot_be_linted_is_a_warning_not_a_crash(extra_revisions):
    ini, add = extra_revisions
    add("0003", "0002", 'raise RuntimeError("needs a feature flag service")')
    add("0004", "0003", upgrade_code("ban-drop-table", "op"))

    findings = lint(ini)

    assert [(f.revision, f.rule, f.level) for f in findings] == [
        ("0003", "lint-failed", "warning"),
        ("0004", "ban-drop-table", "error"),
    ]


def test_sqlite_judges_only_the_rules_of_every_dialect(extra_revisions):
    ini, add = extra_revisions
    add("0003", "0002", 'op.create_index("ix_name", "my_table", ["name"])\nop.drop_column("my_table", "name")')

    assert unaccepted(lint(ini, "postgresql")) == {"require-concurrent-index-creation", "ban-drop-column"}
    assert unaccepted(lint(ini, "sqlite")) == {"ban-drop-column"}


# --- introspection on a real database, which the lint leaves untouched ---------------------------------------

INTROSPECTING = """
bind = op.get_bind()
columns = {column["name"] for column in sa.inspect(bind).get_columns("my_table")}
if "nickname" not in columns:
    op.add_column("my_table", sa.Column("nickname", sa.String(20), nullable=False))
count = bind.execute(sa.text("SELECT count(*) FROM my_table")).scalar_one()
bind.execute(sa.text("UPDATE my_table SET name = 'changed'"))
bind.execute(sa.text("INSERT INTO my_table (id, name) VALUES (99, 'added')"))
bind.exec_driver_sql("ALTER TABLE my_table DROP COLUMN name")
op.execute("DELETE FROM my_table")
op.create_table("extra", sa.Column("id", sa.Integer(), primary_key=True))
if count:
    op.drop_table("my_table")
"""


@pytest.mark.parametrize("in_transaction", [False, True], ids=["idle connection", "connection in a transaction"])
def test_a_revision_introspecting_with_get_bind_is_linted_against_the_database_and_changes_nothing(
    database_url, extra_revisions, in_transaction
):
    ini, add = extra_revisions
    add("0003", "0002", INTROSPECTING)
    upgrade(database_url, "heads")
    on_connection(database_url, lambda c: c.execute(sa.text("INSERT INTO my_table (id, name) VALUES (1, 'kept')")))

    def snapshot(connection):
        rows = connection.execute(sa.text("SELECT id, name FROM my_table ORDER BY id")).all()
        return schema_of(connection), rows

    before = on_connection(database_url, snapshot)
    dialect = "sqlite" if database_url.startswith("sqlite") else "postgresql"

    def lint_on(connection):
        if in_transaction:
            connection.execute(sa.text("SELECT 1"))  # autobegins: the lint must then work in a savepoint
        findings = lint_revisions(pending(ini), dialect, connection)
        assert connection.in_transaction() == in_transaction
        return findings

    findings = on_connection(database_url, lint_on)
    after = on_connection(database_url, snapshot)

    assert after == before
    assert before[1] == [(1, "kept")]
    # The introspection saw the real table (no nickname column, one row): both branches taken.
    assert unaccepted(findings) == {"adding-not-nullable-field", "ban-drop-column", "ban-drop-table"}
    dropped = next(f for f in findings if f.rule == "ban-drop-column")
    assert dropped.operation == "ALTER TABLE my_table DROP COLUMN name"


@pytest.mark.parametrize(
    "statement, read",
    [
        ("SELECT count(*) FROM my_table", True),
        ('PRAGMA main.table_info("my_table")', True),
        ("SHOW server_version", True),
        ("WITH ids AS (SELECT id FROM my_table) SELECT * FROM ids", True),
        ("PRAGMA journal_mode=WAL", False),
        ("WITH gone AS (DELETE FROM my_table RETURNING id) SELECT * FROM gone", False),
        ("EXPLAIN ANALYZE UPDATE my_table SET name = 'x'", False),
        ("INSERT INTO my_table (id, name) VALUES (1, 'x')", False),
    ],
)
def test_only_reads_sent_through_get_bind_run(statement, read):
    assert is_read(statement) == read


def test_without_a_database_get_bind_reads_the_given_schema(extra_revisions):
    ini, add = extra_revisions
    add("0003", "0002", INTROSPECTING)

    findings = lint(ini)

    assert unaccepted(findings) == {"adding-not-nullable-field", "ban-drop-column"}  # an empty my_table


# --- Alembic internals the engine relies on ----------------------------------------------------------------


def test_alembic_still_has_the_private_proxy_machinery_the_lint_installs_op_with():
    for name in ("_setups", "_install_proxy", "_remove_proxy"):
        assert hasattr(Operations, name), f"alembic.operations.Operations.{name} is gone: fix installed_as_op()"
    from alembic import op

    context = MigrationContext.configure(dialect_name="postgresql", opts={"as_sql": True})
    with installed_as_op(Operations(context)):
        assert op.get_context() is context


BATCHES = {
    "add nullable column": ("auto", lambda b: b.add_column(sa.Column("x", sa.Integer()))),
    "add column, string default": ("auto", lambda b: b.add_column(sa.Column("x", sa.Integer(), server_default="0"))),
    "add column, text default": (
        "auto",
        lambda b: b.add_column(sa.Column("x", sa.Integer(), server_default=sa.text("0"))),
    ),
    "add column, now()": ("auto", lambda b: b.add_column(sa.Column("x", sa.DateTime(), server_default=sa.func.now()))),
    "create index": ("auto", lambda b: b.create_index("ix_x", ["name"])),
    "drop column": ("auto", lambda b: b.drop_column("name")),
    "alter column": ("auto", lambda b: b.alter_column("name", type_=sa.String(80))),
    "recreate always": ("always", lambda b: b.add_column(sa.Column("x", sa.Integer()))),
    "recreate never": ("never", lambda b: b.create_index("ix_x", ["name"])),
}


@pytest.mark.parametrize("recreate, body", BATCHES.values(), ids=BATCHES.keys())
def test_the_batch_copy_prediction_matches_what_alembic_does_on_sqlite(tmp_path, recreate, body):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'batch.db'}")
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, name VARCHAR(50))")
            context = MigrationContext.configure(connection)
            with Operations.context(context) as op, op.batch_alter_table("t", recreate=recreate) as batch:
                body(batch)
            recording = RecordingBatchOperations(context, "t", None)
            body(recording)
    finally:
        engine.dispose()

    copied = any("_alembic_tmp_t" in statement for statement in statements)
    assert sqlite_batch_copies_table(recording.recorded, recreate) == copied


# --- python -m server.lint -------------------------------------------------------------------------------------


def run_lint(*args: str, **environ) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server.lint", *args],
        cwd=ROOT,
        env=clean_environ(**environ),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_all_passes_the_shipped_revisions():
    for dialect in ("postgresql", "sqlite"):
        linted = run_lint("--all", f"--dialect={dialect}")
        assert linted.returncode == 0, linted.stdout + linted.stderr


def test_cli_all_exits_1_on_an_unaccepted_error_and_says_which(extra_revisions):
    ini, add = extra_revisions
    add("0003", "0002", upgrade_code("ban-drop-column", "op"))

    linted = run_lint("--all", "--dialect=postgresql", ALEMBIC_CONFIG=ini)

    assert linted.returncode == 1, linted.stdout + linted.stderr
    assert linted.stdout.splitlines() == [
        f"0003 error ban-drop-column: drop_column my_table.name: {RULES['ban-drop-column'].message}"
    ]
    assert "0003" in linted.stderr and "ban-drop-column" in linted.stderr


def test_cli_dialects_differ_on_postgresql_only_rules(extra_revisions):
    ini, add = extra_revisions
    add("0003", "0002", upgrade_code("require-concurrent-index-creation", "sql"))

    assert run_lint("--all", "--dialect=postgresql", ALEMBIC_CONFIG=ini).returncode == 1
    assert run_lint("--all", "--dialect=sqlite", ALEMBIC_CONFIG=ini).returncode == 0


def test_cli_lints_only_the_revisions_pending_on_the_database(database_url, extra_revisions):
    ini, add = extra_revisions
    add("0003", "0002", upgrade_code("ban-drop-table", "op"))

    # 0001..0003 pending: 0003 drops a table created in the same pending set, which no running release reads.
    linted = run_lint(f"--database-url={database_url}", ALEMBIC_CONFIG=ini)
    assert (linted.returncode, linted.stdout) == (0, ""), linted.stdout + linted.stderr

    upgrade(database_url, "heads")
    linted = run_lint(f"--database-url={database_url}", ALEMBIC_CONFIG=ini)  # 0003 pending alone
    assert linted.returncode == 1, linted.stdout + linted.stderr
    assert linted.stdout.startswith("0003 error ban-drop-table")


def test_cli_on_a_database_at_a_revision_this_build_does_not_know_says_so_in_one_line(database_url):
    upgrade_in_process(database_url)
    query(database_url, "UPDATE alembic_version SET version_num = 'zzzz'")
    linted = run_lint(f"--database-url={database_url}")
    assert linted.returncode == 1 and "Traceback" not in linted.stderr, linted.stderr
    assert linted.stderr.strip().splitlines() == [
        "python -m server.lint: database is at revision zzzz, which this build does not know "
        "(was it migrated by a newer release?)"
    ]


@pytest.mark.parametrize("args", [["--dialect=mysql"], ["--nonsense"], ["--all", "--port=x"]])
def test_cli_bad_usage_exits_2_with_one_line(args):
    linted = run_lint(*args)
    assert linted.returncode == 2
    assert len(linted.stderr.splitlines()) == 1, linted.stderr
