"""Probes and data requests against a server whose database another connection has locked: bounded, "busy"."""

import contextlib
import json
import subprocess
import sys
import time

from conftest import held_in_thread, json_of, query, sqlite_path, table_lock_of, upgrade_in_process

POOL_TIMEOUT = 2.0
# Holds the file's exclusive lock until its stdin closes; says "held" once it has it.
HOLD_EXCLUSIVE = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
sys.stdin.read()
connection.execute("ROLLBACK")
"""


@contextlib.contextmanager
def exclusive_lock_in_another_process(path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_EXCLUSIVE, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.stdin.close()
        holder.wait(10)
        holder.stdout.close()


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_a_locked_sqlite_file_gets_bounded_answers_that_say_busy(start_server, sqlite_url):
    server = start_server(DATABASE_URL=sqlite_url, POOL_TIMEOUT=str(POOL_TIMEOUT))
    server.wait_ready()
    (journal_mode,) = query(sqlite_url, "PRAGMA journal_mode")[0]

    with exclusive_lock_in_another_process(sqlite_path(sqlite_url)):
        ready, ready_took = timed(lambda: server.get("/health/ready", timeout=10))
        post, post_took = timed(lambda: server.request("POST", "/", json.dumps({"name": "locked out"}).encode()))
        page, page_took = timed(lambda: server.get("/", timeout=10))
    print(f"locked file: ready {ready_took:.2f} s, POST {post_took:.2f} s, GET {page_took:.2f} s")

    assert ready_took < 3, ready_took
    assert post_took < POOL_TIMEOUT + 1.5 and page_took < POOL_TIMEOUT + 1.5, (post_took, page_took)
    assert post[0] == 503 and post[2]["Retry-After"], post
    assert json_of(post) == {"error": "database busy: it is locked by another connection"}
    if journal_mode != "wal":  # in WAL mode readers go on reading beside a writer
        assert ready[0] == 503, ready
        assert json_of(ready) == {"status": "unavailable", "error": "database busy: it is locked by another connection"}
        assert page[0] == 503 and json_of(page) == json_of(post), page

    # The lock gone, the same connections serve again.
    assert server.get("/health/ready")[0] == 200
    assert server.request("POST", "/", json.dumps({"name": "after the lock"}).encode())[0] == 201
    assert "Traceback" not in server.log, server.log
    assert server.stop() == 0, server.log


def test_a_locked_postgres_table_gets_bounded_answers_that_say_busy(start_server, postgres_url):
    server = start_server(DATABASE_URL=postgres_url, POOL_TIMEOUT=str(POOL_TIMEOUT))
    server.wait_ready()
    assert server.request("POST", "/", json.dumps({"name": "before the lock"}).encode())[0] == 201

    with held_in_thread(table_lock_of(postgres_url, "ACCESS EXCLUSIVE")):
        # More requests than the pool holds: none may keep a connection waiting behind the lock.
        answers = [timed(lambda: server.get("/", timeout=15)) for _ in range(3)]
        post, post_took = timed(lambda: server.request("POST", "/", b'{"name": "locked out"}', timeout=15))
        ready = server.get("/health/ready")
    print(f"locked table: GET {[round(took, 2) for _, took in answers]} s, POST {post_took:.2f} s")

    for page, took in [*answers, (post, post_took)]:
        assert page[0] == 503 and page[2]["Retry-After"], page
        assert json_of(page) == {"error": "database busy: it is locked by another connection"}
        assert took < POOL_TIMEOUT + 1.5, took
    assert ready[0] == 200, ready  # the probe reads alembic_version, which the lock does not touch

    # The lock gone, the same pool serves again, and the lines about it are warnings, not tracebacks.
    assert server.get("/")[0] == 200
    assert server.request("POST", "/", json.dumps({"name": "after the lock"}).encode())[0] == 201
    assert "database unavailable or busy: DatabaseBusy" in server.log, server.log
    assert "Traceback" not in server.log, server.log
    assert server.stop() == 0, server.log


def test_probes_answered_503_while_starting_stay_out_of_the_log_and_other_errors_do_not(
    start_server, extra_revisions, sqlite_url
):
    ini, add = extra_revisions
    upgrade_in_process(sqlite_url)  # at 0002; the server's history has 0003 beyond it: it waits
    add("0003", "0002", "op.create_table('extra', sa.Column('id', sa.Integer, primary_key=True))")
    server = start_server("--migrate=off", DATABASE_URL=sqlite_url, ALEMBIC_CONFIG=str(ini))
    server.wait_listening()
    for _ in range(20):
        status, body, _ = server.get("/health/ready")
        assert (status, json.loads(body)) == (503, {"status": "waiting"})
    assert server.get("/no-such-page")[0] == 404

    assert server.stop() == 0, server.log
    log = server.log
    assert "GET /health/ready" not in log, log  # twenty probes, no line: the service is starting
    assert "404 GET /no-such-page" in log, log  # the access log itself still writes
