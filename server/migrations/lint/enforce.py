"""The lint as the migrator applies it: before the first pending revision, per --lint."""

import logging

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from server.errors import LintRefused
from server.migrations.lint import lint_revisions, refusal
from server.migrations.status import Status
from server.settings import Settings

log = logging.getLogger("server.migrations.lint")


def enforce_lint(settings: Settings, script: ScriptDirectory, connection: sa.Connection, status: Status) -> None:
    """Lint the pending revisions; under --lint=enforce raise LintRefused for an unaccepted error."""
    if settings.lint == "off":
        return
    scripts = [script.get_revision(revision.id) for revision in status.pending]
    findings = lint_revisions(scripts, connection.dialect.name, connection=connection)
    for finding in findings:
        if finding.accepted is not None:
            log.info("lint: %s", finding)
        else:
            log.warning("lint: %s", finding)
    refused = refusal(findings)
    if refused is not None and settings.lint == "enforce":
        raise LintRefused(refused, tuple(findings))
