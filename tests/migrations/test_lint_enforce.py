"""The lint where it counts: before anything runs, on every path that upgrades, per --lint."""

import pytest

from conftest import (
    assert_one_clear_error,
    column_names,
    in_thread,
    make_settings,
    run_alembic,
    table_names,
    upgrade_in_process,
    versions,
)
from server.errors import LintRefused
from server.migrations import Migrator
from server.migrations.lint import RULES
from server.settings import ROOT

# One revision per error-level rule, each on my_table as it is at 0002 (an existing table, holding rows in
# production). `runs` says whether PostgreSQL can apply it once accepted (CONCURRENTLY in a transaction cannot).
DANGEROUS = {
    "adding-not-nullable-field": ('op.add_column("my_table", sa.Column("note", sa.String(10), nullable=False))', True),
    "adding-field-with-volatile-default": (
        'op.add_column("my_table", sa.Column("r", sa.Float, server_default=sa.text("random()")))',
        True,
    ),
    "changing-column-type": (
        'op.alter_column("my_table", "name", type_=sa.String(20), existing_type=sa.String(50))',
        True,
    ),
    "setting-not-nullable-field": (
        'op.alter_column("my_table", "name", nullable=False, existing_type=sa.String(50))',
        True,
    ),
    "require-concurrent-index-creation": ('op.create_index("ix_my_table_name", "my_table", ["name"])', True),
    "constraint-missing-not-valid": (
        'op.create_check_constraint("name_not_empty", "my_table", "length(name) > 0")',
        True,
    ),
    "disallowed-unique-constraint": ('op.create_unique_constraint("uq_my_table_name", "my_table", ["name"])', True),
    "ban-concurrent-index-creation-in-transaction": (
        'op.create_index("ix_my_table_name", "my_table", ["name"], postgresql_concurrently=True)',
        False,
    ),
    "ban-drop-column": ('op.drop_column("my_table", "created_at")', True),
    "ban-drop-table": ('op.drop_table("my_table")', True),
    "renaming-column": ('op.alter_column("my_table", "name", new_column_name="title")', True),
    "renaming-table": ('op.rename_table("my_table", "items")', True),
}
SAFE_0003 = 'op.add_column("my_table", sa.Column("safe_note", sa.String(10)))'


def ignore(rule: str, reason: str) -> str:
    return f"lint_ignore = {{{rule!r}: {reason!r}}}"


@pytest.mark.postgres
@pytest.mark.parametrize("rule", DANGEROUS)
def test_each_error_rule_refuses_before_anything_runs_and_accepting_it_with_a_reason_lets_it_run(
    rule, postgres_url, extra_revisions
):
    ini, add = extra_revisions
    upgrade_in_process(postgres_url)  # at 0002: my_table exists, as in production
    code, runs = DANGEROUS[rule]
    add("0003", "0002", SAFE_0003)
    add("0004", "0003", code)
    migrator = Migrator(make_settings(postgres_url, f"--alembic-config={ini}"))

    with pytest.raises(LintRefused) as refused:
        in_thread(migrator.upgrade)
    assert "revision 0004" in str(refused.value) and rule in str(refused.value), refused.value
    assert "lint_ignore" in str(refused.value)
    # Untouched: not even the safe revision before it ran.
    assert versions(postgres_url) == ["0002"]
    assert "safe_note" not in column_names(postgres_url, "my_table")

    add("0004", "0003", code, imports=ignore(rule, ""))  # a reason is required
    with pytest.raises(LintRefused) as refused:
        in_thread(Migrator(make_settings(postgres_url, f"--alembic-config={ini}")).upgrade)
    assert "lint-ignore-without-reason" in str(refused.value)
    assert versions(postgres_url) == ["0002"]

    if runs:
        add("0004", "0003", code, imports=ignore(rule, "test: my_table is empty here"))
        in_thread(Migrator(make_settings(postgres_url, f"--alembic-config={ini}")).upgrade)
        assert versions(postgres_url) == ["0004"]


def test_the_same_operation_on_a_table_created_earlier_in_the_pending_set_passes(database_url, extra_revisions):
    ini, add = extra_revisions
    upgrade_in_process(database_url)
    add(
        "0003",
        "0002",
        'op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("t", sa.Text))',
    )
    add(
        "0004",
        "0003",
        'op.create_index("ix_notes_t", "notes", ["t"])\nop.alter_column("notes", "t", new_column_name="b")',
    )
    in_thread(Migrator(make_settings(database_url, f"--alembic-config={ini}")).upgrade)
    assert versions(database_url) == ["0004"]


def test_the_server_refuses_with_exit_1_and_one_line_naming_revision_and_rule(
    database_url, extra_revisions, start_server
):
    ini, add = extra_revisions
    upgrade_in_process(database_url)
    add("0003", "0002", SAFE_0003)
    add("0004", "0003", 'op.drop_column("my_table", "created_at")')
    server = start_server(f"--database-url={database_url}", f"--alembic-config={ini}")
    assert server.wait_exit(30) == 1, server.log
    line = assert_one_clear_error(server, "0004", "ban-drop-column", "lint_ignore", "--lint=warn")
    assert "Traceback" not in line
    assert versions(database_url) == ["0002"] and "safe_note" not in column_names(database_url, "my_table")


@pytest.mark.parametrize("lint", ["warn", "off"])
def test_lint_warn_and_off_let_the_upgrade_run(lint, database_url, extra_revisions, start_server):
    ini, add = extra_revisions
    upgrade_in_process(database_url)
    add("0003", "0002", 'op.drop_column("my_table", "created_at")')
    server = start_server(
        f"--database-url={database_url}", f"--alembic-config={ini}", f"--lint={lint}", "--migrate=only"
    )
    assert server.wait_exit(30) == 0, server.log
    assert versions(database_url) == ["0003"]
    warned = [line for line in server.log.splitlines() if "WARNING" in line and "ban-drop-column" in line]
    assert bool(warned) == (lint == "warn"), server.log


def test_alembic_upgrade_by_hand_is_linted_too_and_warn_is_the_override(database_url, extra_revisions, tmp_path):
    ini, add = extra_revisions
    upgrade_in_process(database_url)
    add("0003", "0002", 'op.rename_table("my_table", "items")')
    refused = run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=database_url, ALEMBIC_CONFIG=str(ini))
    assert refused.returncode != 0, refused.stderr  # alembic exits 255 on a CommandError
    assert "renaming-table" in refused.stderr and "0003" in refused.stderr and "Traceback" not in refused.stderr
    assert versions(database_url) == ["0002"] and "my_table" in table_names(database_url)

    done = run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=database_url, ALEMBIC_CONFIG=str(ini), LINT="warn")
    assert done.returncode == 0, done.stderr
    assert versions(database_url) == ["0003"] and "items" in table_names(database_url)


def test_a_downgrade_by_hand_is_not_linted(database_url, extra_revisions, tmp_path):
    ini, add = extra_revisions
    add("0003", "0002", SAFE_0003, downgrade='op.drop_column("my_table", "safe_note")')
    done = run_alembic("upgrade", "head", cwd=tmp_path, DATABASE_URL=database_url, ALEMBIC_CONFIG=str(ini))
    assert done.returncode == 0, done.stderr
    down = run_alembic("downgrade", "-1", cwd=tmp_path, DATABASE_URL=database_url, ALEMBIC_CONFIG=str(ini))
    assert down.returncode == 0, down.stderr
    assert versions(database_url) == ["0002"]


def test_the_readme_names_every_rule():
    readme = (ROOT / "README.md").read_text()
    for rule in RULES:
        assert f"| `{rule}` |" in readme, rule
