"""SQLite snapshots by sqlite3's online backup API: consistent while the service writes, one standalone file."""

import contextlib
import sqlite3
import urllib.parse
from pathlib import Path

from sqlalchemy.engine import URL

from server.db import SQLITE_BUSY_TIMEOUT
from server.errors import BackupFailed
from server.migrations.heads import SELECT_VERSIONS, VERSION_TABLE


def take(url: URL, target: Path) -> dict[str, int]:
    """Copy the live database into target from one read transaction; the rows of each table, as copied."""
    try:
        with _open(Path(url.database), read_only=True) as source, _open(target) as copy:
            # The backup API copies within the source's open read transaction: the rows counted here are
            # exactly the rows copied, whatever the service writes meanwhile (in WAL mode it goes on writing;
            # in rollback-journal mode its commits wait for the copy, within the busy timeout).
            source.execute("BEGIN")
            counts = row_counts(source)
            source.backup(copy)
            source.execute("COMMIT")
            # The copy inherits WAL mode from the source's header: back to a rollback journal, so the
            # snapshot is the one file, with no -wal beside it.
            copy.execute("PRAGMA journal_mode = DELETE").fetchall()
            copied = row_counts(copy)
    except sqlite3.Error as exc:
        raise BackupFailed(f"SQLite backup into {target} failed: {exc}") from None
    if copied != counts:
        raise BackupFailed(f"the snapshot's row counts {copied} differ from the database's {counts}")
    return counts


def row_counts(connection: sqlite3.Connection) -> dict[str, int]:
    tables = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    return {name: connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for (name,) in tables}


def check(path: Path) -> str | None:
    """The revision a snapshot holds (None without alembic_version); BackupFailed when it is damaged."""
    try:
        with _open(path, read_only=True) as snapshot:
            problems = [row[0] for row in snapshot.execute("PRAGMA integrity_check").fetchall()]
            if problems != ["ok"]:
                raise BackupFailed(f"{path} fails PRAGMA integrity_check: {'; '.join(problems[:3])}")
            return _revision(snapshot)
    except sqlite3.Error as exc:
        raise BackupFailed(f"{path} is not a readable SQLite database: {exc}") from None


def restore(url: URL, snapshot: Path) -> None:
    """Write the snapshot's pages into the live file in one step (one write transaction)."""
    live_path = Path(url.database)
    try:
        with _open(snapshot, read_only=True) as source, _open(live_path) as live:
            source.backup(live)
    except sqlite3.Error as exc:
        raise BackupFailed(f"restoring {snapshot} into {live_path} failed: {exc}") from None


def _revision(connection: sqlite3.Connection) -> str | None:
    has_table = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
    ).fetchone()
    if not has_table:
        return None
    return "+".join(sorted(row[0] for row in connection.execute(SELECT_VERSIONS)))


@contextlib.contextmanager
def _open(path: Path, read_only: bool = False):
    # Read-only by URI: opening a snapshot (or the live file to copy it) never creates or changes a file.
    target = f"file:{urllib.parse.quote(str(path))}" + ("?mode=ro" if read_only else "")
    connection = sqlite3.connect(target, uri=True, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()
