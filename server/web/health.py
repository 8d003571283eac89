"""Probes: /health/live answers while the process runs; /health/ready once the schema is at head."""

import asyncio

from server.db import SessionFactory, is_busy
from server.errors import Phase
from server.migrations.heads import SELECT_CURRENT
from server.web.handlers import DATABASE_BUSY, DATABASE_DOWN, JsonHandler
from server.web.state import ServiceState

READY_PING_TIMEOUT = 2.0
READY_LOCK_WAIT = 1.5  # SQLite's busy wait, which no asyncio timeout interrupts, ends inside the ping's 2 s


class LiveHandler(JsonHandler):
    def get(self) -> None:
        self.write_json({"status": "live"})


class ReadyHandler(JsonHandler):
    def initialize(self, state: ServiceState, session_factory: SessionFactory):
        super().initialize(state)
        self.session_factory = session_factory

    async def get(self) -> None:
        if not self.state.ready:
            self.write_json({"status": self.state.phase}, status=503)
            return
        try:
            revisions = await asyncio.wait_for(self.ping(), READY_PING_TIMEOUT)
        except DATABASE_DOWN as exc:
            if is_busy(exc) or isinstance(exc, TimeoutError):
                self.write_json({"status": Phase.UNAVAILABLE, "error": DATABASE_BUSY}, status=503)
            else:
                self.write_json({"status": Phase.UNAVAILABLE}, status=503)
            return
        self.write_json({"status": Phase.READY, "revision": revisions[0] if len(revisions) == 1 else revisions})

    async def ping(self) -> list[str]:
        async with self.session_factory.connection(lock_wait=READY_LOCK_WAIT) as connection:
            return (await connection.scalars(SELECT_CURRENT)).all()
