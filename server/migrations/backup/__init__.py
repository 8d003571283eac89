"""Snapshots before upgrading and restoring one: naming, rotation, and the dialect that does the work."""

import dataclasses
import datetime
import logging
import os
import re
import time
from pathlib import Path

from sqlalchemy.engine import URL

from server.errors import BackupFailed
from server.migrations.heads import SELECT_CURRENT
from server.migrations.status import Status
from server.settings import Settings

log = logging.getLogger(__name__)

EXTENSIONS = {"sqlite": ".db", "postgresql": ".dump"}
PARTIAL = ".partial"  # a snapshot being written; it gets its final name only once checked
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# <name>-<revision before>-<UTC stamp>[-<n>].<ext>: n counts snapshots taken within the same second
SNAPSHOT_NAME = re.compile(r"^(?P<name>.+)-(?P<revision>[^-]+)-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?\.(?:db|dump)$")
GO_ON_WITHOUT = "nothing was migrated; --backup=off upgrades without a snapshot"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    path: Path
    revision: str  # the revisions the database was at, joined by "+"
    taken_at: datetime.datetime
    size: int
    seconds: float | None = None  # how long it took, when this process took it
    rows: dict[str, int] | None = None  # rows per table as copied, where the dialect counts them

    def as_json(self) -> dict:
        seconds = round(self.seconds, 3) if self.seconds is not None else None
        return {"path": str(self.path), "size": self.size, "seconds": seconds, "revision": self.revision}


def _dialect(url: URL):
    # Imported on use: each dialect's driver-specific code stays in its own module.
    if url.get_backend_name() == "sqlite":
        from server.migrations.backup import sqlite as dialect
    else:
        from server.migrations.backup import postgres as dialect
    return dialect


def wanted(settings: Settings) -> bool:
    """Whether --backup asks for a snapshot of this kind of database."""
    if settings.backup == "off":
        return False
    return settings.backup == "always" or settings.database_url.get_backend_name() == "sqlite"


def backup_dir(settings: Settings) -> Path:
    if settings.backup_dir:
        return Path(settings.backup_dir)
    url = settings.database_url
    if url.get_backend_name() == "sqlite":
        return Path(url.database).parent / "backups"
    return Path.cwd() / "var" / "backups"


def database_name(url: URL) -> str:
    return Path(url.database).stem if url.get_backend_name() == "sqlite" else url.database


def list_snapshots(settings: Settings) -> list[Snapshot]:
    """This database's snapshots in the backup directory, newest first."""
    name = database_name(settings.database_url)
    extension = EXTENSIONS[settings.database_url.get_backend_name()]
    found = []
    directory = backup_dir(settings)
    if not directory.is_dir():
        return []
    for path in directory.iterdir():
        match = SNAPSHOT_NAME.match(path.name)
        if not match or match["name"] != name or path.suffix != extension or not path.is_file():
            continue
        taken_at = datetime.datetime.strptime(match["stamp"], STAMP_FORMAT).replace(tzinfo=datetime.UTC)
        snapshot = Snapshot(path, match["revision"], taken_at, path.stat().st_size)
        found.append(((taken_at, path.stat().st_mtime_ns, int(match["n"] or 0)), snapshot))
    return [snapshot for _, snapshot in sorted(found, key=lambda item: item[0], reverse=True)]


def snapshot_before_upgrade(settings: Settings, status: Status) -> Snapshot | None:
    """Under the migration lock, before the first pending revision: the snapshot --backup asks for, checked
    and rotated; BackupFailed (nothing migrated) when it cannot be made."""
    if not wanted(settings) or not status.pending or not status.current:
        return None  # nothing to upgrade, or an empty database: nothing to lose
    revision = "+".join(sorted(status.current))
    try:
        snapshot = take_snapshot(settings, revision)
    except BackupFailed as exc:
        raise BackupFailed(f"snapshot before upgrading failed: {exc}; {GO_ON_WITHOUT}") from None
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise BackupFailed(f"snapshot before upgrading failed: {exc.strerror or exc}{where}; {GO_ON_WITHOUT}") from None
    rows = f", {sum(snapshot.rows.values())} rows" if snapshot.rows is not None else ""
    log.info(
        "snapshot of %s at %s: %s (%s%s) in %.2f s",
        database_name(settings.database_url),
        revision,
        snapshot.path,
        human_size(snapshot.size),
        rows,
        snapshot.seconds,
    )
    rotate(settings)
    return snapshot


def take_snapshot(settings: Settings, revision: str) -> Snapshot:
    """A checked snapshot of the database (at revision) under its final name in the backup directory."""
    started = time.monotonic()
    url = settings.database_url
    directory = backup_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    taken_at = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    final = _free_name(directory, database_name(url), revision, taken_at, EXTENSIONS[url.get_backend_name()])
    partial = final.with_name(final.name + PARTIAL)
    try:
        rows = _dialect(url).take(url, partial)
        found = _dialect(url).check(partial)
        if found != revision:
            raise BackupFailed(f"the snapshot holds revision {found or 'none'}, not {revision}")
        partial.rename(final)
        _sync_directory(directory)  # the rename itself survives a power cut before the revisions commit
    finally:
        partial.unlink(missing_ok=True)
    return Snapshot(final, revision, taken_at, final.stat().st_size, time.monotonic() - started, rows)


def _free_name(directory: Path, name: str, revision: str, taken_at: datetime.datetime, extension: str) -> Path:
    # The contract's name, unless a snapshot of the same revision was taken within the same second (a
    # downgrade and an upgrade by hand, say): then -1, -2, … after the stamp. Order comes from the files' times.
    stamp = taken_at.strftime(STAMP_FORMAT)
    taken = [
        int(match["n"] or 0)
        for path in directory.iterdir()
        if (match := SNAPSHOT_NAME.match(path.name.removesuffix(PARTIAL)))
        and match["name"] == name
        and match["stamp"] == stamp
        and match["revision"] == revision
    ]
    suffix = f"-{max(taken) + 1}" if taken else ""
    return directory / f"{name}-{revision}-{stamp}{suffix}{extension}"


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rotate(settings: Settings) -> None:
    """Keep the newest --backup-keep snapshots of this database, and drop partial ones a crash left behind
    (under the migration lock no other snapshot of it is being written); a failed deletion is only logged."""
    name = database_name(settings.database_url)
    stale = [
        path
        for path in backup_dir(settings).glob(f"*{PARTIAL}")
        if (match := SNAPSHOT_NAME.match(path.name.removesuffix(PARTIAL))) and match["name"] == name
    ]
    for old in [snapshot.path for snapshot in list_snapshots(settings)[settings.backup_keep :]] + stale:
        try:
            old.unlink()
            log.info("deleted old snapshot %s", old)
        except OSError as exc:
            log.warning("could not delete old snapshot %s: %s", old, exc.strerror or exc)


def check_snapshot(settings: Settings, path: Path) -> str:
    """The revision a snapshot holds; BackupFailed when it is missing, unreadable or damaged."""
    if not path.is_file():
        raise BackupFailed(f"no snapshot file at {path}")
    expected = EXTENSIONS[settings.database_url.get_backend_name()]
    if path.suffix != expected:
        raise BackupFailed(f"{path.name} is not a snapshot of this kind of database (expected a {expected} file)")
    revision = _dialect(settings.database_url).check(path)
    if not revision:
        raise BackupFailed(f"{path} holds no alembic_version: not a snapshot of this service's database")
    return revision


def restore(settings: Settings, path: Path) -> str:
    """Replace the database's contents with the snapshot's, under the migration lock; the revision now."""
    import asyncio

    # Imported here: upgrade.py imports this package for the snapshot hook.
    from server.migrations.upgrade import locked_session

    dialect = _dialect(settings.database_url)

    async def restore_locked() -> str:
        async with locked_session(settings, label="restore") as conn:
            await conn.commit()
            check_snapshot(settings, path)
            await conn.run_sync(lambda _connection: dialect.restore(settings.database_url, path))
            # Read back through the database itself: what the next server start will find.
            current = await conn.scalars(SELECT_CURRENT)
            revision = "+".join(sorted(current))
            await conn.commit()
            return revision

    return asyncio.run(restore_locked())


def human_size(size: float) -> str:
    if size < 1024:
        return f"{size:.0f} B"
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            break
    return f"{size:.1f} {unit}"
