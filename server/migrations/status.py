"""Where a database stands against the revision files: current, heads, pending."""

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection

from server.errors import UnknownRevision
from server.migrations.events import Revision, Status
from server.migrations.heads import VERSION_TABLE
from server.settings import Settings


def make_alembic_config(settings: Settings) -> Config:
    """The alembic.ini the settings name, carrying the settings for env.py (flags included)."""
    config = Config(settings.alembic_config)
    config.attributes["settings"] = settings
    return config


def read_status(script: ScriptDirectory, connection: Connection) -> Status:
    """The database's status, read on a connection (in a transaction the caller ends)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return status_of(script, context.get_current_heads())


def status_of(script: ScriptDirectory, current: tuple[str, ...]) -> Status:
    """The status of a database at the given revisions; UnknownRevision for one this build lacks."""
    for revision in current:
        try:
            script.get_revision(revision)
        except CommandError:
            raise UnknownRevision(
                f"database is at revision {revision}, which this build does not know "
                "(was it migrated by a newer release?)"
            ) from None
    pending = reversed(list(script.iterate_revisions("heads", current or "base")))
    return Status(
        current=tuple(current),
        heads=tuple(script.get_heads()),
        pending=tuple(Revision(s.revision, s.doc or "") for s in pending),
    )
