"""What this process is doing: the phase health checks report, and the requests shutdown waits for."""

from server.errors import Phase


class ServiceState:
    # Written from the migrator's thread, read by handlers: single attribute stores are atomic in Python.
    def __init__(self, phase: Phase):
        self.phase = phase
        self.in_flight = 0

    def set_phase(self, phase: Phase) -> None:
        self.phase = Phase(phase)

    @property
    def ready(self) -> bool:
        return self.phase == Phase.READY
