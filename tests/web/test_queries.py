"""The table's statements as the handlers run them (web/queries.py), on the pooled connections they share."""

import gc
import sqlite3

import pytest

from conftest import make_settings, query, upgrade_in_process
from server.db import make_serving_engine, make_session_factory
from server.web.queries import fetch_page, insert_row


def test_a_row_sqlite3_cannot_read_leaves_no_connection_on_an_old_snapshot(io_loop, sqlite_url):
    """Text that is not UTF-8 (stored by another tool) fails the page read; its statement stayed open on
    the pooled connection, which then read an old snapshot and failed every write as busy, until the garbage
    collector freed the cursor (off here, so that the test does not depend on when it runs)."""
    upgrade_in_process(sqlite_url)
    query(sqlite_url, "INSERT INTO my_table (name) VALUES (CAST(X'E9' AS TEXT))")  # Latin-1 'é'
    settings = make_settings(sqlite_url, "--pool-size=1")  # every request on the same connection

    async def scenario() -> None:
        engine = make_serving_engine(settings)
        session_factory = make_session_factory(engine, settings)
        try:
            with pytest.raises(sqlite3.OperationalError, match="decode"):
                async with session_factory.connection() as connection:
                    await fetch_page(connection, 0, 10)
            query(sqlite_url, "DELETE FROM my_table")  # another connection mends the table
            async with session_factory.connection(writes=True) as connection:
                row = await insert_row(connection, "after the bad row")
            async with session_factory.connection() as connection:
                assert await fetch_page(connection, 0, 10) == [row]
        finally:
            await engine.dispose()

    gc.disable()
    try:
        io_loop.run_sync(scenario, timeout=30)
    finally:
        gc.enable()
