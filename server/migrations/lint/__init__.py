"""Revision lint: every op.* call and op.execute() statement of pending revisions, held to squawk's rules."""

import contextlib

import sqlalchemy as sa

from .capture import is_linting, record_upgrade, sa_type_shape
from .judge import Finding, Judge, TypeShape
from .rules import ERROR, RULES

__all__ = ["DIALECTS", "RULES", "Finding", "is_linting", "lint_revisions", "refusal"]

DIALECTS = ("postgresql", "sqlite")


def lint_revisions(
    scripts, dialect: str, connection: sa.Connection | None = None, each_alone: bool = False, metadata=None
) -> list[Finding]:
    """Findings of the scripts (alembic Script objects, oldest first), judged for dialect.

    connection: the target database, used only so that revisions calling op.get_bind() can read from it;
    whatever they would write is judged and not run, in a transaction rolled back at the end. Reads from
    it see the database as it is now, before any pending revision. Without one, op.get_bind() answers from
    a throwaway in-memory SQLite holding metadata (the schema at head, say): introspection of tables and
    columns works without any database, at the price of the bind's dialect being SQLite.
    each_alone: judge each revision as if deployed alone (`--all`): a table is new only in its own revision.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, not {dialect!r}")
    if not scripts:
        return []
    with contextlib.ExitStack() as stack:
        if connection is None:
            connection = stack.enter_context(scratch_connection(metadata))
        judge = Judge(dialect, column_type_lookup=column_type_lookup(connection))
        for script in scripts:
            lint_ignore, bad_ignores = read_lint_ignore(script.module)
            judge.start_revision(script.revision, lint_ignore, alone=each_alone)
            for rule_id in bad_ignores:
                judge.report("lint-ignore-without-reason", f"lint_ignore[{rule_id!r}]")
            record_upgrade(script, judge, connection)
        return judge.findings


@contextlib.contextmanager
def scratch_connection(metadata):
    engine = sa.create_engine("sqlite://")
    try:
        with engine.connect() as connection:
            if metadata is not None:
                metadata.create_all(connection)
                connection.commit()
            yield connection
    finally:
        engine.dispose()


def column_type_lookup(connection: sa.Connection):
    """The current type of a column, read from the database, for type changes that do not say it."""

    def lookup(table: str, column: str) -> TypeShape | None:
        try:
            columns = sa.inspect(connection).get_columns(table)
        except sa.exc.NoSuchTableError:
            return None
        return next((sa_type_shape(c["type"]) for c in columns if c["name"] == column), None)

    return lookup


def read_lint_ignore(module) -> tuple[dict[str, str], list[str]]:
    """({rule: reason} accepted, [rules listed without a reason]) from the revision's `lint_ignore`."""
    raw = getattr(module, "lint_ignore", None)
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, ["<not a dict>"]
    accepted = {rule: reason.strip() for rule, reason in raw.items() if isinstance(reason, str) and reason.strip()}
    return accepted, [str(rule) for rule in raw if rule not in accepted]


def refusal(findings) -> str | None:
    """One line naming the first unaccepted error's revision and rule and how to accept it; None when none."""
    refused = [finding for finding in findings if finding.level == ERROR and finding.accepted is None]
    if not refused:
        return None
    first = refused[0]
    more = f" ({len(refused) - 1} more unaccepted errors: python -m server.lint lists them)" if len(refused) > 1 else ""
    if first.rule == "lint-ignore-without-reason":
        how = "give every rule in its lint_ignore a reason"
    else:
        how = f'if it is safe, add lint_ignore = {{"{first.rule}": "<why it is safe>"}} to that revision'
    return (
        f"revision {first.revision} breaks lint rule {first.rule}: {first.operation}: {first.message};"
        f" {how}, or run with --lint=warn{more}"
    )
