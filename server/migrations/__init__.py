"""Bringing a database to head safely: status, the lock, the lint, the upgrade, the runner off the event loop.

Names are imported on first use: a start that finds the database at head never loads Alembic's runtime.
"""

import importlib

_HOMES = {
    "VERSION_TABLE": "server.migrations.heads",
    "Revision": "server.migrations.events",
    "Status": "server.migrations.events",
    "make_alembic_config": "server.migrations.status",
    "AppliedRevision": "server.migrations.events",
    "Migrator": "server.migrations.upgrade",
    "UpgradeResult": "server.migrations.events",
    "context_options": "server.migrations.upgrade",
    "run_online": "server.migrations.upgrade",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'server.migrations' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
