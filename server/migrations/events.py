"""What migrations report, in types that need no Alembic: a start at head and the metrics use them."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Revision:
    id: str
    message: str


@dataclasses.dataclass(frozen=True)
class Status:
    current: tuple[str, ...]
    heads: tuple[str, ...]
    pending: tuple[Revision, ...]  # oldest first

    @property
    def at_head(self) -> bool:
        return not self.pending and set(self.current) == set(self.heads)


@dataclasses.dataclass(frozen=True)
class AppliedRevision:
    id: str
    message: str
    seconds: float


@dataclasses.dataclass(frozen=True)
class UpgradeResult:
    applied: tuple[AppliedRevision, ...]
    status: Status
    seconds: float


class MigrationEvents:
    """What the migrations report as they go, to whoever watches (the server's metrics); here, nothing.

    Called on the migrator's thread. Migrations never import web: the watcher subclasses this instead."""

    def status_read(self, status: Status) -> None:
        """Where the database stands, each time it is read."""

    def lock_taken(self, waited: float) -> None:
        """The migration lock was taken after waiting this many seconds."""

    def upgraded(self, result: UpgradeResult) -> None:
        """An upgrade through the runner finished (perhaps with nothing to apply)."""

    def upgrade_failed(self, applied: tuple[AppliedRevision, ...]) -> None:
        """An upgrade through the runner failed, after applying these revisions."""
