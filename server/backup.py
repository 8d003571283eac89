"""The snapshots taken before upgrading, from the command line: list them, restore one.

    python -m server.backup list [--database-url URL] [--backup-dir DIR]
    python -m server.backup restore FILE [--database-url URL]

Settings come as for the server (flags, then DATABASE_URL, BACKUP_DIR …). Exit 0, or 1 with one line.
"""

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from server.errors import EXIT_FAILED, EXIT_OK, ServiceError, describe
from server.logs import configure_logging
from server.migrations.backup import backup_dir, database_name, human_size, list_snapshots, restore
from server.settings import Settings, load_settings

log = logging.getLogger("server.backup")  # not __name__: run with -m, that is "__main__"

USAGE = "usage: python -m server.backup list [--database-url URL] | restore FILE [--database-url URL]"


def main(argv: Sequence[str]) -> int:
    configure_logging()
    args = list(argv)
    command = args.pop(0) if args else ""
    if command in ("-h", "--help"):
        print(USAGE)
        return EXIT_OK
    try:
        if command == "list" and not (args and not args[0].startswith("--")):
            return list_command(load_settings(args))
        if command == "restore" and args and not args[0].startswith("--"):
            return restore_command(load_settings(args[1:]), Path(args[0]).expanduser().resolve())
        log.error("%s", USAGE)
        return EXIT_FAILED
    except ServiceError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except Exception as exc:  # one line for a person; the traceback only at debug level
        log.debug("failed", exc_info=True)
        log.error("%s failed: %s", command, describe(exc))
        return EXIT_FAILED


def list_command(settings: Settings) -> int:
    snapshots = list_snapshots(settings)
    name = database_name(settings.database_url)
    if not snapshots:
        print(f"no snapshots of {name} in {backup_dir(settings)}")
        return EXIT_OK
    print(f"snapshots of {name} in {backup_dir(settings)}, newest first:")
    for snapshot in snapshots:
        taken = snapshot.taken_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        print(f"{snapshot.path}  revision {snapshot.revision}  {taken}  {human_size(snapshot.size)}")
    return EXIT_OK


def restore_command(settings: Settings, path: Path) -> int:
    revision = restore(settings, path)
    print(f"restored {path} into {database_name(settings.database_url)}: the database is now at revision {revision}")
    print(f"start the release whose newest revision is {revision}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
