"""The error families, and the one table that says what each means: exit status, HTTP status, phase."""

import dataclasses
import enum

from sqlalchemy.engine import URL


class Phase(enum.StrEnum):
    """What a serving process is doing: what /health/ready reports."""

    MIGRATING = "migrating"  # running revisions, or waiting for another migrator's lock
    WAITING = "waiting"  # --migrate=off and the database is behind head (or ahead of this build)
    UNAVAILABLE = "unavailable"  # the database does not answer
    FAILED = "failed"  # an upgrade failed; a process that was serving goes on serving
    READY = "ready"


class ServiceError(Exception):
    """A failure said in one line, for a person: no traceback, never a password."""

    applied: tuple = ()  # revisions that did succeed before it


class SettingsError(ServiceError, ValueError):
    """A flag, variable or URL the service cannot run with."""


class DatabaseUnavailable(ServiceError):
    """The database does not answer, or refuses us for good (wrong password, no such database)."""


class DatabaseBusy(ServiceError):
    """The database answers but is locked or out of connections for longer than we wait."""


class LockTimeout(ServiceError):
    """Another migrator held the migration lock for longer than --migration-lock-timeout."""


class LockLost(ServiceError):
    """The migration lock went away while we held it: we stop before applying anything more."""


class UnknownRevision(ServiceError):
    """The database is at a revision this build does not know (a newer release migrated it)."""


class RevisionFailed(ServiceError):
    """A revision raised; its transaction rolled back."""

    def __init__(self, revision: str, message: str, applied: tuple = ()):
        super().__init__(message)
        self.revision = revision
        self.applied = applied


class LintRefused(ServiceError):
    """A pending revision has an unaccepted error-level lint finding; nothing was applied."""

    def __init__(self, message: str, findings: tuple = ()):
        super().__init__(message)
        self.findings = findings


class BackupFailed(ServiceError):
    """The snapshot before an upgrade, or a restore, could not be made; nothing was migrated."""


class TransferFailed(ServiceError):
    """A transfer stopped; nothing was committed on the target."""


class Interrupted(ServiceError):
    """The process was asked to stop; the revision that was running finished or rolled back."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    exit_status: int  # for a command or a server that fails to start
    http_status: int  # for the admin endpoints
    phase: Phase | None  # what a process that is not yet serving reports; None keeps the phase it had
    retry: bool = False  # the HTTP answer carries Retry-After: waiting may mend it


EXIT_OK, EXIT_FAILED, EXIT_PENDING = 0, 1, 3

OUTCOMES: dict[type[ServiceError], Outcome] = {
    SettingsError: Outcome(EXIT_FAILED, 500, None),
    DatabaseUnavailable: Outcome(EXIT_FAILED, 503, Phase.UNAVAILABLE, retry=True),
    DatabaseBusy: Outcome(EXIT_FAILED, 503, Phase.UNAVAILABLE, retry=True),
    LockTimeout: Outcome(EXIT_FAILED, 503, None, retry=True),
    LockLost: Outcome(EXIT_FAILED, 503, Phase.FAILED, retry=True),
    UnknownRevision: Outcome(EXIT_FAILED, 409, Phase.WAITING),
    RevisionFailed: Outcome(EXIT_FAILED, 500, Phase.FAILED),
    LintRefused: Outcome(EXIT_FAILED, 409, Phase.FAILED),
    BackupFailed: Outcome(EXIT_FAILED, 500, Phase.FAILED),
    TransferFailed: Outcome(EXIT_FAILED, 500, None),
    Interrupted: Outcome(EXIT_OK, 503, None, retry=True),
    ServiceError: Outcome(EXIT_FAILED, 500, Phase.FAILED),
}


def outcome(exc: ServiceError) -> Outcome:
    """The table's row for an error: its own family's, or the nearest one it descends from."""
    return next(OUTCOMES[family] for family in type(exc).__mro__ if family in OUTCOMES)


def sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's error code behind a driver or SQLAlchemy error, if any."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(exc, "sqlstate", None)


def describe(exc: BaseException, url: URL | None = None) -> str:
    """One line for a log: the driver's own words, never the password."""
    cause = getattr(exc, "orig", None) or exc
    words = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    words = f"{type(cause).__name__}: {words}" if words else type(cause).__name__
    password = url.password if url is not None else None
    return words.replace(password, "***") if password else words
