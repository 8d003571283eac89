"""Connection limits against real server processes: a descriptor flood, idle sockets timed out."""

import contextlib
import inspect
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tornado.http1connection import HTTP1Connection

from server.settings import ROOT
from server.web.connections import close_after_response, connection_cap

FLOOD_SOCKETS = 1100
SERVER_OPEN_FILES = 1024
FLOOD_SECONDS = 10.0
SLOW_FLOOD_SECONDS = 3.0


@contextlib.contextmanager
def open_files_at_least(count: int):
    """This test process's soft RLIMIT_NOFILE raised to count for the block (skip if the hard limit is lower)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count:
        pytest.skip(f"the hard open-files limit {hard} is below the {count} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, count), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def timed_get(server, path: str, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    status = server.get(path, timeout=timeout)[0]
    return status, time.monotonic() - started


def flood_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "connection limit" in line or "open files" in line]


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def flood(address, count: int, request_start: bytes) -> list[socket.socket]:
    """count connections to address, each having sent request_start (b"": connected, silent)."""
    sockets: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket()
        sockets.append(sock)
        if request_start:
            sock.settimeout(5)
            sock.connect(address)
            sock.sendall(request_start)
        else:
            sock.setblocking(False)
            sock.connect_ex(address)  # completes in the kernel: no need to wait for it
    return sockets


def probe_during(server, sockets: list[socket.socket], seconds: float) -> list[float]:
    """/health/live probed every 0.2 s for seconds, then the flood closed: each probe's latency."""
    latencies: list[float] = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            status, latency = timed_get(server, "/health/live", timeout=5)
            assert status == 200
            latencies.append(latency)
            time.sleep(0.2)
    finally:
        for sock in sockets:
            sock.close()
    print(f"/health/live during the flood: {len(latencies)} probes, max {max(latencies) * 1000:.0f} ms")
    return latencies


def assert_serving_after_a_short_log(server, lines_before: int) -> None:
    log = server.log
    new_lines = log.splitlines()[lines_before:]
    assert len(new_lines) < 100, "\n".join(new_lines[:200])
    assert "Traceback" not in log and "Errno 24" not in log, log
    assert server.request("POST", "/", b'{"name": "after the flood"}')[0] == 201
    assert server.get("/")[0] == 200
    assert server.stop() == 0, server.log


def test_a_flood_of_silent_sockets_costs_the_server_no_descriptor_and_live_answers_within_1_s(start_server, sqlite_url):
    server = start_server(DATABASE_URL=sqlite_url, open_files=SERVER_OPEN_FILES)
    server.wait_ready()
    lines_before = len(server.log.splitlines())
    with open_files_at_least(FLOOD_SOCKETS + 200):
        sockets = flood(("127.0.0.1", server.port), FLOOD_SOCKETS, b"")
        # The kernel holds a connection that has sent nothing (TCP_DEFER_ACCEPT) until --idle-timeout.
        assert open_descriptors(server.process.pid) < 200
        latencies = probe_during(server, sockets, FLOOD_SECONDS)
    assert max(latencies) < 1.0, latencies
    assert_serving_after_a_short_log(server, lines_before)


def test_a_flood_of_slow_requests_sheds_the_oldest_and_live_still_answers(start_server, sqlite_url):
    server = start_server(DATABASE_URL=sqlite_url, open_files=SERVER_OPEN_FILES)
    server.wait_ready()
    lines_before = len(server.log.splitlines())
    with open_files_at_least(FLOOD_SOCKETS + 200):
        # Each has begun a request, so the server holds it, up to the cap; then it closes the oldest.
        sockets = flood(("127.0.0.1", server.port), FLOOD_SOCKETS, b"GET / HTTP/1.1\r\n")
        probe_during(server, sockets, SLOW_FLOOD_SECONDS)  # every probe answered, within its 5 s timeout
    assert flood_lines(server.log), server.log  # the shedding was reported, once per interval
    assert_serving_after_a_short_log(server, lines_before)


def test_an_idle_connection_is_closed_after_idle_timeout(start_server, sqlite_url):
    server = start_server(DATABASE_URL=sqlite_url, IDLE_TIMEOUT="1")
    server.wait_listening()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # the server closed it: end of stream
        assert time.monotonic() - started < 5
    assert server.stop() == 0, server.log


# A GuardedHTTPServer with no cap of its own, in a process allowed 64 files: only EMFILE stops its accepts.
OUT_OF_DESCRIPTORS_SERVER = """
import asyncio, logging, resource, sys
import tornado.netutil, tornado.web
from server.web.connections import GuardedHTTPServer

class Live(tornado.web.RequestHandler):
    def get(self):
        self.write("live")

async def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    server = GuardedHTTPServer(tornado.web.Application([("/", Live)]), max_connections=10**6)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    print("port", sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(3600)

logging.basicConfig(level=logging.INFO)
asyncio.run(main())
"""


def test_out_of_descriptors_the_oldest_idle_connection_goes_and_accepting_never_spins(tmp_path):
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", OUT_OF_DESCRIPTORS_SERVER], stdout=subprocess.PIPE, stderr=log_file, cwd=ROOT
        )
    try:
        port = int(process.stdout.readline().split()[1])
        flood = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(200)]
        try:
            time.sleep(1)
            cpu_before = process_cpu_seconds(process.pid)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
                probe.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert probe.recv(100).startswith(b"HTTP/1.1 200")
            time.sleep(1)
            assert process_cpu_seconds(process.pid) - cpu_before < 0.5  # not spinning on EMFILE
        finally:
            for sock in flood:
                sock.close()
    finally:
        process.kill()
        process.wait(10)
        process.stdout.close()
    log = log_path.read_text()
    assert 1 <= len([line for line in log.splitlines() if "connection limit reached" in line]) <= 2, log
    assert "Traceback" not in log and "Errno 24" not in log, log


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_cap_leaves_room_for_the_pool_and_the_process_itself():
    assert connection_cap(1024, 15) < 1024 - 64 - 3 * 15 + 1
    assert connection_cap(1_048_576, 15) > 900_000
    assert connection_cap(64, 15) >= 16


def test_tornado_still_decides_keep_alive_by_the_attribute_the_drain_sets():
    # close_after_response reaches into Tornado: this fails loudly if Tornado renames what it relies on.
    assert "self._disconnect_on_finish" in inspect.getsource(HTTP1Connection._finish_request)
    assert "self._disconnect_on_finish" in inspect.getsource(HTTP1Connection.write_headers)
    connection = HTTP1Connection.__new__(HTTP1Connection)
    connection._disconnect_on_finish = False
    close_after_response(connection)
    assert connection._disconnect_on_finish is True
