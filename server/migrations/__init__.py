"""Bringing a database to head safely: status, the lock, the upgrade, the runner off the event loop."""

from server.migrations.status import VERSION_TABLE, Revision, Status, make_alembic_config
from server.migrations.upgrade import AppliedRevision, Migrator, UpgradeResult, context_options, run_online

__all__ = [
    "VERSION_TABLE",
    "AppliedRevision",
    "Migrator",
    "Revision",
    "Status",
    "UpgradeResult",
    "context_options",
    "make_alembic_config",
    "run_online",
]
