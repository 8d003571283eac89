"""Probes: /health/live answers while the process runs; /health/ready once the schema is at head."""

import asyncio

from sqlalchemy import text

from server.db import SessionFactory
from server.errors import Phase
from server.migrations import VERSION_TABLE
from server.web.handlers import DATABASE_DOWN, JsonHandler
from server.web.state import ServiceState

READY_PING_TIMEOUT = 2.0
SELECT_REVISION = text(f"SELECT version_num FROM {VERSION_TABLE}")


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
            async with self.session_factory() as session:
                revisions = (await asyncio.wait_for(session.scalars(SELECT_REVISION), READY_PING_TIMEOUT)).all()
        except DATABASE_DOWN:
            self.write_json({"status": Phase.UNAVAILABLE}, status=503)
            return
        self.write_json({"status": Phase.READY, "revision": revisions[0] if len(revisions) == 1 else revisions})
