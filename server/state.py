"""What this process is doing: the phase health checks report, and the requests shutdown waits for."""

PHASES = (
    "migrating",  # running revisions, or waiting for another migrator's lock
    "waiting",  # --migrate=off and the database is behind head
    "unavailable",  # the database does not answer
    "failed",  # an admin-triggered upgrade failed
    "ready",
)


class ServiceState:
    # Written from the migrator's thread, read by handlers: single attribute stores are atomic in Python.
    def __init__(self, phase: str):
        self.phase = phase
        self.in_flight = 0

    def set_phase(self, phase: str) -> None:
        assert phase in PHASES, phase
        self.phase = phase

    @property
    def ready(self) -> bool:
        return self.phase == "ready"
