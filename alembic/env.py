import asyncio
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from server.migrator import VERSION_TABLE, MigrationError, make_migration_engine, run_locked
from server.models import Base
from server.settings import load_settings

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# Deviation: inside the server logging is already set up, and fileConfig would disable its loggers.
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata

# Deviation: the URL comes from the server's settings (handed over by the server, which may have it
# from a flag; else read from the same environment), never from alembic.ini.
settings = config.attributes.get("settings") or load_settings(environ=None)


def run_migrations_offline() -> None:
    """Run migrations in 'offline' mode: print the SQL (`alembic upgrade head --sql`)."""
    context.configure(
        url=settings.database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        version_table=VERSION_TABLE,
        transaction_per_migration=True,
    )

    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        # Deviation: SQLite alters a table only by copying it; batch mode does that.
        render_as_batch=connection.dialect.name == "sqlite",
        # Deviation: a failing revision leaves the database at the last one that succeeded.
        transaction_per_migration=True,
        # Deviation: lets the embedded migrator report each revision as it is applied.
        on_version_apply=config.attributes.get("on_version_apply"),
    )

    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    """Deviation: by hand (`alembic upgrade`), take the same migration lock as a starting server."""

    connectable = make_migration_engine(settings.database_url, label="alembic")
    try:
        await run_locked(connectable, settings, do_run_migrations)
    finally:
        await connectable.dispose()


def run_migrations_online() -> None:
    """Run migrations in 'online' mode."""

    connection = config.attributes.get("connection")
    if connection is None:
        try:
            asyncio.run(run_async_migrations())
        except MigrationError as exc:
            # Deviation: a lock timeout or an unreachable database is one line, as Alembic reports its own.
            raise CommandError(str(exc)) from None
    else:
        # Deviation: the embedded migrator hands over a connection on which it holds the lock.
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
