"""python -m server.lint [--all] [--dialect postgresql|sqlite] [--database-url URL]: lint pending revisions."""

import argparse
import asyncio
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from server.errors import ServiceError
from server.migrations.lint import DIALECTS, lint_revisions, refusal
from server.migrations.status import read_status
from server.models import metadata
from server.settings import SettingsError, load_settings


class UsageError(Exception):
    """Bad command line: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parse(argv):
    parser = _Parser(prog="python -m server.lint", description=__doc__, add_help=True)
    parser.add_argument("--all", action="store_true", help="lint every revision, each as if deployed alone")
    parser.add_argument("--dialect", choices=DIALECTS, help="judge for this dialect (default: the database's)")
    options, settings_flags = parser.parse_known_args(argv)
    return options, load_settings(settings_flags)


def oldest_first(script_directory: ScriptDirectory) -> list:
    return list(reversed(list(script_directory.walk_revisions())))


def lint_pending(script_directory: ScriptDirectory, settings, dialect: str):
    """Findings of the revisions not applied yet on the database (all of them on a missing SQLite file)."""
    url = settings.database_url
    if url.get_backend_name() == "sqlite" and not Path(url.database).exists():
        return lint_revisions(oldest_first(script_directory), dialect)  # connecting would create the file

    def pending_findings(connection: sa.Connection):
        pending = read_status(script_directory, connection).pending  # oldest first
        return lint_revisions([script_directory.get_revision(r.id) for r in pending], dialect, connection=connection)

    async def run():
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(pending_findings)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def main(argv) -> int:
    try:
        options, settings = parse(argv)
    except (UsageError, SettingsError) as exc:
        print(f"python -m server.lint: {exc}", file=sys.stderr)
        return 2
    dialect = options.dialect or settings.database_url.get_backend_name()
    script_directory = ScriptDirectory.from_config(Config(settings.alembic_config))
    if options.all:
        # Without a database op.get_bind() reads from the schema at head, in an in-memory SQLite.
        findings = lint_revisions(oldest_first(script_directory), dialect, each_alone=True, metadata=metadata)
    else:
        try:
            findings = lint_pending(script_directory, settings, dialect)
        except (OSError, sa.exc.DBAPIError) as exc:
            print(f"python -m server.lint: cannot read the database {settings.database_url}: {exc}", file=sys.stderr)
            return 1
        except ServiceError as exc:  # at a revision this build does not know
            print(f"python -m server.lint: {exc}", file=sys.stderr)
            return 1
    for finding in findings:
        print(finding)
    refused = refusal(findings)
    if refused:
        print(refused, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
