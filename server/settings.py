"""Settings: read once at the edge from flags and the environment, then passed down."""

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import tornado.options
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

ROOT = Path(__file__).resolve().parent.parent
MIGRATE_MODES = ("auto", "off", "only", "check")

# name, type, default, environment variable, help
_FLAGS = (
    ("address", str, "127.0.0.1", "ADDRESS", "address to listen on"),
    ("port", int, 8888, "PORT", "port to listen on (0 picks a free one and logs it)"),
    ("database-url", str, "", "DATABASE_URL", "database URL (default: SQLite file var/app.db)"),
    ("processes", int, 1, "PROCESSES", "worker processes sharing the socket (0 = one per CPU)"),
    ("migrate", str, "auto", "MIGRATE", "auto | off | only | check"),
    ("migration-lock-timeout", float, 60.0, "MIGRATION_LOCK_TIMEOUT", "seconds to wait for another migrator"),
    ("db-wait", float, 30.0, "DB_WAIT", "seconds to keep retrying an unreachable database at startup"),
    (
        "ddl-lock-timeout",
        float,
        5.0,
        "DDL_LOCK_TIMEOUT",
        "PostgreSQL lock_timeout for revisions, in seconds (0 = wait forever)",
    ),
    ("pool-size", int, 10, "POOL_SIZE", "database connections each process keeps open"),
    ("pool-max-overflow", int, 0, "POOL_MAX_OVERFLOW", "extra connections opened under load, closed after use"),
    ("pool-timeout", float, 5.0, "POOL_TIMEOUT", "seconds a request waits for a free connection before a 503"),
    ("admin-token", str, "", "ADMIN_TOKEN", "bearer token for /admin (unset: admin answers 404)"),
    ("alembic-config", str, str(ROOT / "alembic.ini"), "ALEMBIC_CONFIG", "path to alembic.ini"),
)


class SettingsError(ValueError):
    """A flag, variable or URL the server cannot run with."""


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: URL  # str(URL) masks the password, so a logged Settings leaks nothing
    address: str = "127.0.0.1"
    port: int = 8888
    processes: int = 1
    migrate: str = "auto"
    migration_lock_timeout: float = 60.0
    db_wait: float = 30.0
    ddl_lock_timeout: float = 5.0
    pool_size: int = 10
    pool_max_overflow: int = 0
    pool_timeout: float = 5.0
    admin_token: str | None = dataclasses.field(default=None, repr=False)
    alembic_config: str = str(ROOT / "alembic.ini")


def load_settings(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from command-line flags (argv without the program name), then environment, then defaults."""
    environ = os.environ if environ is None else environ
    parser = tornado.options.OptionParser()
    for name, type_, default, variable, help_ in _FLAGS:
        parser.define(name, type=type_, default=default, help=f"{help_} [{variable}]")
    # The environment is parsed as if it were flags given first, so flags win and both are checked alike.
    for name, _, _, variable, _ in _FLAGS:
        if environ.get(variable, "") != "":
            _parse_one(parser, f"--{name}={environ[variable]}", source=variable)
    args = list(argv)
    while args:
        arg = args.pop(0)
        # "--port 9000" as well as tornado's own "--port=9000"
        if arg.startswith("--") and "=" not in arg and arg != "--help" and args and not args[0].startswith("--"):
            arg = f"{arg}={args.pop(0)}"
        _parse_one(parser, arg, source=arg.split("=", 1)[0])
    return _validated(parser)


def _parse_one(parser: tornado.options.OptionParser, arg: str, source: str) -> None:
    name = arg.lstrip("-").partition("=")[0]
    if not arg.startswith("--") or (name not in parser and name != "help"):
        raise SettingsError(f"unknown argument {arg.split('=', 1)[0]!r} (see --help)")
    try:
        parser.parse_command_line(["", arg], final=False)
    except (ValueError, tornado.options.Error) as exc:
        raise SettingsError(f"bad value for {source}: {exc}") from None


def _validated(parser: tornado.options.OptionParser) -> Settings:
    if parser.migrate not in MIGRATE_MODES:
        raise SettingsError(f"--migrate must be one of {', '.join(MIGRATE_MODES)}, not {parser.migrate!r}")
    if not 0 <= parser.port <= 65535:
        raise SettingsError(f"--port must be 0..65535, not {parser.port}")
    if parser.processes < 0:
        raise SettingsError("--processes must be 0 (one per CPU) or more")
    if parser.pool_size < 1 or parser.pool_max_overflow < 0:
        raise SettingsError("--pool-size must be 1 or more and --pool-max-overflow 0 or more")
    for name in ("migration_lock_timeout", "db_wait", "ddl_lock_timeout", "pool_timeout"):
        if not parser[name] >= 0:  # also rejects nan
            raise SettingsError(f"--{name.replace('_', '-')} must be 0 or more seconds")
    return Settings(
        database_url=normalize_database_url(parser.database_url or default_database_url()),
        address=parser.address,
        port=parser.port,
        processes=parser.processes,
        migrate=parser.migrate,
        migration_lock_timeout=parser.migration_lock_timeout,
        db_wait=parser.db_wait,
        ddl_lock_timeout=parser.ddl_lock_timeout,
        pool_size=parser.pool_size,
        pool_max_overflow=parser.pool_max_overflow,
        pool_timeout=parser.pool_timeout,
        admin_token=parser.admin_token or None,
        alembic_config=str(Path(parser.alembic_config).resolve()),
    )


def default_database_url() -> str:
    """The embedded default: an SQLite file in var/ under the working directory."""
    return f"sqlite:///{Path.cwd() / 'var' / 'app.db'}"


_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def normalize_database_url(raw: str) -> URL:
    """The URL forms users give, mapped onto the async drivers; SQLite paths made absolute."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise SettingsError("--database-url is not a database URL") from None
    drivername = _ASYNC_DRIVERS.get(url.drivername)
    if drivername is None:
        raise SettingsError(
            f"--database-url scheme {url.drivername!r} is not supported: use postgresql:// or sqlite:///"
        )
    url = url.set(drivername=drivername)
    if drivername.startswith("sqlite"):
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            raise SettingsError("--database-url for SQLite must name a file: sqlite:///path/to/app.db")
        url = url.set(database=str(Path(url.database).expanduser().resolve()))
    return url
