"""/admin: migration status and an HTTP-triggered upgrade, behind a bearer token."""

import dataclasses
import hmac

from server.errors import LintRefused, ServiceError, outcome
from server.migrations.runner import MigrationRunner
from server.web.handlers import RETRY_AFTER_SECONDS, ApiError, JsonHandler
from server.web.state import ServiceState


class AdminHandler(JsonHandler):
    def initialize(self, state: ServiceState, runner: MigrationRunner, admin_token: str | None):
        super().initialize(state)
        self.runner = runner
        self.admin_token = admin_token

    def prepare(self) -> None:
        super().prepare()
        if not self.admin_token:
            raise ApiError(404, "not found")  # no token configured: as if there were no admin at all
        scheme, _, given = self.request.headers.get("Authorization", "").partition(" ")
        # Constant time, so the token cannot be guessed a character at a time from response timings.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.admin_token.encode()):
            raise ApiError(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})


def api_error(exc: ServiceError) -> ApiError:
    """A migration failure as an HTTP answer, by the error table (server/errors.py)."""
    answer = outcome(exc)
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if answer.retry else None
    details = None
    if isinstance(exc, LintRefused):
        details = {"findings": [dataclasses.asdict(finding) for finding in exc.findings]}
    return ApiError(answer.http_status, str(exc), headers, details)


class MigrationsHandler(AdminHandler):
    async def get(self) -> None:
        try:
            status = await self.runner.status()
        except ServiceError as exc:
            raise api_error(exc) from None
        self.write_json(
            {
                "current": list(status.current),
                "heads": list(status.heads),
                "pending": [{"id": r.id, "message": r.message} for r in status.pending],
                "state": self.state.phase,
                "running": self.runner.running,
                "last_upgrade": self.runner.last_upgrade,
                "last_snapshot": self.runner.last_snapshot,
            }
        )


class UpgradeHandler(AdminHandler):
    async def post(self) -> None:
        try:
            result = await self.runner.upgrade()
        except ServiceError as exc:
            # A failed revision rolled back; a server that was serving goes on serving.
            raise api_error(exc) from None
        self.write_json(
            {
                "applied": [{"id": r.id, "message": r.message, "seconds": round(r.seconds, 3)} for r in result.applied],
                "current": list(result.status.current),
                "seconds": round(result.seconds, 3),
            }
        )
