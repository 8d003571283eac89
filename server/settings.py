"""Settings: every one declared once in SETTINGS; flags, the environment, --help and the README come from it."""

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import tornado.options
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from server.errors import SettingsError

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting: its flag, its environment variable, its default, what it means."""

    flag: str  # without the leading dashes
    type: type
    default: object
    help: str  # one or more sentences: --help shows them, and so does the README's table
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # inclusive; nan is refused too
    maximum: float | None = None
    default_text: str | None = None  # how the README shows a default that is computed
    secret: bool = False  # never shown in repr, logs or --help defaults

    @property
    def env(self) -> str:
        return self.flag.upper().replace("-", "_")

    @property
    def field(self) -> str:
        return self.flag.replace("-", "_")


SECONDS = dict(type=float, minimum=0)

SETTINGS: tuple[Setting, ...] = (
    Setting("address", str, "127.0.0.1", "Address to listen on."),
    Setting(
        "port", int, 8888, "Port to listen on; `0` picks a free port and logs it.", minimum=0, maximum=65535
    ),
    Setting(
        "database-url",
        str,
        "",
        "Database to migrate and serve: `postgresql://…`, `postgres://…`, `postgresql+asyncpg://…`, "
        "`sqlite:///path` or `sqlite+aiosqlite:///path`.",
        default_text="SQLite file `var/app.db` under the working directory",
    ),
    Setting(
        "processes",
        int,
        1,
        "Worker processes sharing the listening socket; `0` = one per CPU. Each runs the full startup (the "
        "lock lets one migrate). A worker that fails stops the others; none is restarted; they die with "
        "the parent.",
        minimum=0,
    ),
    Setting(
        "migrate",
        str,
        "auto",
        "`auto` (upgrade, then serve) | `off` (serve once the database is at head; never migrate) | `only` "
        "(upgrade and exit) | `check` (change nothing; exit 0 at head, 3 pending, 1 cannot tell).",
        choices=("auto", "off", "only", "check"),
    ),
    Setting(
        "migration-lock-timeout",
        **SECONDS,
        default=60.0,
        help="Seconds to wait for another migrator's lock before giving up (exit 1).",
    ),
    Setting(
        "db-wait",
        **SECONDS,
        default=30.0,
        help="Seconds to keep retrying an unreachable database at startup, with backoff. A wrong password, "
        "a missing role or a missing database fails at once.",
    ),
    Setting(
        "ddl-lock-timeout",
        **SECONDS,
        default=5.0,
        help="PostgreSQL `lock_timeout` while revisions run, in seconds; `0` = wait forever.",
    ),
    Setting(
        "ddl-lock-retries",
        int,
        3,
        "Times a revision that failed on `lock_timeout` is retried in a fresh transaction, after growing "
        "pauses; then exit 1.",
        minimum=0,
    ),
    Setting(
        "lint",
        str,
        "enforce",
        "`enforce` (refuse to apply pending revisions with an unaccepted error finding) | `warn` (log and "
        "go on) | `off`.",
        choices=("enforce", "warn", "off"),
    ),
    Setting(
        "backup",
        str,
        "auto",
        "Snapshot before upgrading: `auto` (SQLite yes, PostgreSQL no) | `always` (PostgreSQL too, with "
        "`pg_dump`) | `off`.",
        choices=("auto", "always", "off"),
    ),
    Setting(
        "backup-dir",
        str,
        "",
        "Directory for snapshots.",
        default_text="`backups/` beside the SQLite file; `var/backups/` under the working directory for PostgreSQL",
    ),
    Setting("backup-keep", int, 5, "Snapshots kept per database; older ones are deleted.", minimum=1),
    Setting("pool-size", int, 10, "Database connections each process keeps open for requests.", minimum=1),
    Setting(
        "pool-max-overflow", int, 0, "Extra connections opened under load, closed after use.", minimum=0
    ),
    Setting(
        "pool-timeout",
        **SECONDS,
        default=5.0,
        help="Seconds a request waits for a free connection; then 503 `database busy`.",
    ),
    Setting(
        "idle-timeout",
        **SECONDS,
        default=60.0,
        help="Seconds a keep-alive connection may sit idle, and a request body may take, before it is closed.",
    ),
    Setting("log-format", str, "text", "`text` | `json` (one object per line).", choices=("text", "json")),
    Setting(
        "admin-token",
        str,
        "",
        "Bearer token for the `/admin` endpoints; while unset they answer 404.",
        default_text="unset",
        secret=True,
    ),
    Setting(
        "alembic-config",
        str,
        str(ROOT / "alembic.ini"),
        "Path to the `alembic.ini` to migrate with; the `alembic` command reads the same variable.",
        default_text="`alembic.ini` in the repository",
    ),
)

ENVIRONMENT_VARIABLES = tuple(s.env for s in SETTINGS)


def _url(raw: str) -> URL:
    return normalize_database_url(raw or default_database_url())


# How a parsed value becomes the Settings field, where it is more than the value itself.
_CONVERT: dict[str, Callable] = {
    "database_url": _url,  # str(URL) masks the password, so a logged Settings leaks nothing
    "admin_token": lambda token: token or None,
    "alembic_config": lambda path: str(Path(path).resolve()),
    "backup_dir": lambda path: str(Path(path).expanduser().resolve()) if path else None,
}
_FIELD_TYPES = {"database_url": URL, "admin_token": str | None, "backup_dir": str | None}

Settings = dataclasses.make_dataclass(
    "Settings",
    [
        (
            s.field,
            _FIELD_TYPES.get(s.field, s.type),
            dataclasses.field(default=_CONVERT.get(s.field, lambda v: v)(s.default), repr=not s.secret),
        )
        for s in SETTINGS
        if s.field != "database_url"
    ]
    + [("database_url", URL, dataclasses.field(default_factory=lambda: _url("")))],
    frozen=True,
)
Settings.__module__ = __name__
Settings.__doc__ = "The settings a process runs with (built from SETTINGS)."


def load_settings(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from command-line flags (argv without the program name), then environment, then defaults."""
    environ = os.environ if environ is None else environ
    parser = make_option_parser()
    # The environment is parsed as if it were flags given first, so flags win and both are checked alike.
    for setting in SETTINGS:
        if environ.get(setting.env, "") != "":
            _parse_one(parser, f"--{setting.flag}={environ[setting.env]}", source=setting.env)
    args = list(argv)
    while args:
        arg = args.pop(0)
        # "--port 9000" as well as tornado's own "--port=9000"
        if arg.startswith("--") and "=" not in arg and arg != "--help" and args and not args[0].startswith("--"):
            arg = f"{arg}={args.pop(0)}"
        _parse_one(parser, arg, source=arg.split("=", 1)[0])
    return Settings(**{s.field: _checked(s, parser[s.field]) for s in SETTINGS})


def make_option_parser() -> tornado.options.OptionParser:
    """A tornado.options parser with every setting: what --help prints."""
    parser = tornado.options.OptionParser()
    for s in SETTINGS:
        default = "" if s.secret else s.default
        parser.define(s.flag, type=s.type, default=default, help=f"{_plain(s.help)} [{s.env}]")
    return parser


def _parse_one(parser: tornado.options.OptionParser, arg: str, source: str) -> None:
    name = arg.lstrip("-").partition("=")[0]
    if not arg.startswith("--") or (name not in parser and name != "help"):
        raise SettingsError(f"unknown argument {arg.split('=', 1)[0]!r} (see --help)")
    try:
        parser.parse_command_line(["", arg], final=False)
    except (ValueError, tornado.options.Error) as exc:
        raise SettingsError(f"bad value for {source}: {exc}") from None


def _checked(setting: Setting, value):
    flag = f"--{setting.flag}"
    if setting.choices and value not in setting.choices:
        raise SettingsError(f"{flag} must be one of {', '.join(setting.choices)}, not {value!r}")
    if setting.type in (int, float):
        if isinstance(value, float) and math.isnan(value):
            raise SettingsError(f"{flag} must be a number, not nan")
        low, high = setting.minimum, setting.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{low:g}..{high:g}" if high is not None else f"{low:g} or more"
            raise SettingsError(f"{flag} must be {bounds}, not {value:g}")
    return _CONVERT.get(setting.field, lambda v: v)(value)


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


def _plain(markdown: str) -> str:
    return markdown.replace("`", "")


def _default_text(setting: Setting) -> str:
    if setting.default_text:
        return setting.default_text
    return f"`{setting.default:g}`" if isinstance(setting.default, float) else f"`{setting.default}`"


def markdown_table() -> str:
    """The README's table of settings (tests/test_settings.py holds the README to it)."""
    lines = ["| Flag | Environment | Default | Meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        lines.append(f"| `--{s.flag}` | `{s.env}` | {_default_text(s)} | {s.help.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
