"""The serving engine: a bounded pool, and a 503 (never a hang, never a 500) when it is exhausted."""

import asyncio
import sqlite3
import threading

import asyncpg
import orjson
import pytest
from sqlalchemy.engine import make_url

from conftest import make_settings
from server.db import make_serving_engine, make_session_factory
from server.web.app import make_app

POOL = ("--pool-size=1", "--pool-max-overflow=0", "--pool-timeout=0.5")


@pytest.fixture
def engine(io_loop, migrated_url):
    """A one-connection pool: the second concurrent request has to wait for it."""
    engine = make_serving_engine(make_settings(migrated_url, *POOL))
    yield engine
    io_loop.run_sync(engine.dispose)


@pytest.fixture
def app(engine, state, migrated_url):
    return make_app(make_session_factory(engine, make_settings(migrated_url, *POOL)), state)


@pytest.fixture
def table_locked(migrated_url):
    """Hold a lock that makes every read of my_table wait, until release() is called."""
    held, release = threading.Event(), threading.Event()

    def hold_sqlite():
        connection = sqlite3.connect(make_url(migrated_url).database, isolation_level=None)
        # The server's file is in WAL mode, where readers never wait for a writer; a connection in exclusive
        # locking mode keeps every other connection out until it closes.
        connection.execute("PRAGMA locking_mode=EXCLUSIVE")
        connection.execute("BEGIN EXCLUSIVE")
        held.set()
        release.wait(30)
        connection.execute("ROLLBACK")
        connection.close()

    async def hold_postgres():
        connection = await asyncpg.connect(migrated_url)
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("LOCK TABLE my_table IN ACCESS EXCLUSIVE MODE")
        held.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)
        await transaction.rollback()
        await connection.close()

    if migrated_url.startswith("sqlite"):
        holder = threading.Thread(target=hold_sqlite)
    else:
        holder = threading.Thread(target=asyncio.run, args=(hold_postgres(),))
    holder.start()
    assert held.wait(10)
    yield release
    release.set()
    holder.join(30)


@pytest.mark.parametrize("database_url", ["postgres", "sqlite"], indirect=True)
@pytest.mark.gen_test(timeout=30)
async def test_an_exhausted_pool_answers_503_after_the_pool_timeout(http_client, base_url, engine):
    async with engine.connect():  # the pool's only connection, busy elsewhere
        started = asyncio.get_running_loop().time()
        shed = await http_client.fetch(base_url + "/", raise_error=False, request_timeout=10)
        waited = asyncio.get_running_loop().time() - started
    assert shed.code == 503, shed.body
    assert orjson.loads(shed.body) == {"error": "database busy: no connection came free in time"}
    assert shed.headers["Retry-After"] and shed.headers["Content-Type"] == "application/json"
    assert 0.4 <= waited < 5  # it waited for the pool (0.5 s), then gave up: bounded, no hang
    again = await http_client.fetch(base_url + "/")  # the connection back, the pool serves
    assert again.code == 200


@pytest.mark.parametrize("database_url", ["postgres", "sqlite"], indirect=True)
@pytest.mark.gen_test(timeout=30)
async def test_the_wait_for_a_lock_is_bounded_by_the_pool_timeout_too(http_client, base_url, table_locked):
    # The request holding the only connection gives up on the lock after the pool timeout too, so the one
    # behind it gets the connection and gives up the same way: PostgreSQL's lock_timeout, and SQLite's busy
    # timeout (sqlite3 waits in its busy handler, where no asyncio timeout reaches).
    started = asyncio.get_running_loop().time()
    held, shed = await asyncio.gather(
        http_client.fetch(base_url + "/", raise_error=False, request_timeout=10),
        http_client.fetch(base_url + "/", method="POST", body=b'{"name": "x"}', raise_error=False, request_timeout=10),
    )
    waited = asyncio.get_running_loop().time() - started
    for response in (held, shed):
        assert response.code == 503 and response.headers["Retry-After"], response.body
        assert orjson.loads(response.body)["error"].startswith("database busy: "), response.body
    assert waited < 0.5 * 2 + 1.5  # each waits at most the pool timeout for the connection, then for the lock

    table_locked.set()
    assert (await http_client.fetch(base_url + "/")).code == 200


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.gen_test(timeout=30)
async def test_posts_shed_behind_a_locked_table_store_nothing(http_client, base_url, table_locked):
    slow = asyncio.ensure_future(
        http_client.fetch(
            base_url + "/", method="POST", body=b'{"name": "first"}', raise_error=False, request_timeout=25
        )
    )
    await asyncio.sleep(0.3)
    shed = await http_client.fetch(base_url + "/", method="POST", body=b'{"name": "second"}', raise_error=False)
    for response in (await slow, shed):
        assert response.code == 503 and "busy" in orjson.loads(response.body)["error"], response.body
    table_locked.set()
    page = orjson.loads((await http_client.fetch(base_url + "/")).body)
    assert page["items"] == []  # neither shed request stored anything


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.gen_test(timeout=30)
async def test_a_connection_killed_under_the_pool_costs_one_503_then_reads_recover(http_client, base_url, migrated_url):
    assert (await http_client.fetch(base_url + "/")).code == 200  # the pool's one connection is open now

    async def terminate_others():
        connection = await asyncpg.connect(migrated_url)
        try:
            return await connection.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await connection.close()

    assert await terminate_others() >= 1
    failed = await http_client.fetch(base_url + "/", raise_error=False)
    assert failed.code == 503, failed.body
    assert orjson.loads(failed.body) == {"error": "database unavailable"} and failed.headers["Retry-After"]
    for _ in range(3):  # the dead connection was dropped from the pool: a fresh one serves
        response = await http_client.fetch(base_url + "/")
        assert response.code == 200 and orjson.loads(response.body) == {"items": [], "next": None}
