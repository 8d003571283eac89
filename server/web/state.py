"""What this process is doing: the phase health checks report, and the requests shutdown waits for."""

from collections.abc import Callable

from server.errors import Phase

STARTING = frozenset({Phase.MIGRATING, Phase.WAITING})  # not ready yet, as expected


class ServiceState:
    # Written from the migrator's thread, read by handlers: single attribute stores are atomic in Python.
    def __init__(self, phase: Phase):
        self.phase = phase
        self.in_flight = 0
        self.on_phase: Callable[[Phase], None] = lambda phase: None  # the metrics' service_ready follows it

    def set_phase(self, phase: Phase) -> None:
        self.phase = Phase(phase)
        self.on_phase(self.phase)

    @property
    def ready(self) -> bool:
        return self.phase == Phase.READY

    @property
    def starting(self) -> bool:
        """Not ready yet, as expected: migrating, or waiting for the database to reach head."""
        return self.phase in STARTING
