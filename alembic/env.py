from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from server.migrations import VERSION_TABLE, context_options, run_online
from server.models import metadata
from server.settings import load_settings

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# Deviation: inside the server logging is already set up, and fileConfig would disable its loggers.
if config.config_file_name is not None and "handed_over" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def run_migrations_offline() -> None:
    """Run migrations in 'offline' mode: print the SQL (`alembic upgrade head --sql`)."""
    # Deviation: the URL comes from the server's settings (flags or environment), never from alembic.ini.
    settings = config.attributes.get("settings") or load_settings(environ=None)
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
    # Deviation: the server's options (version table, SQLite batch mode, a transaction per revision).
    context.configure(connection=connection, target_metadata=target_metadata, **context_options(config, connection))

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations in 'online' mode."""
    # Deviation: on the connection the server hands over, or by hand under the same migration lock.
    run_online(config, do_run_migrations)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
