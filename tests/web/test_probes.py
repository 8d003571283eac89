"""Readiness probes answered as they are accepted while the service starts (server/web/probes.py).

A real server is held in a revision until the test lets it go. Its probes are then sent over raw sockets,
so the bytes on the wire are what is checked. An answer written at accept carries no `Server` header, and
Tornado's always does: that is how these tests tell who answered.
"""

import re
import socket
import struct
import time

import pytest
from test_metrics import scrape, value

from conftest import wait_for
from server.web.probes import is_plain_probe

PROBE = b"GET /health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: kube-probe/1.31\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    "head, plain",
    [
        (PROBE, True),
        (b"GET /health/ready HTTP/1.0\r\n\r\n", True),
        (b"GET /health/ready HTTP/1.0\r\nHost: a\r\n\r\n", True),
        (b"GET /health/ready HTTP/1.1\r\nHost: [::1]:8080\r\nconnection: Close\r\n\r\n", True),
        (b"GET /health/ready HTTP/1.1\r\nHost: a\r\nAccept:\r\nConnection: \tclose \r\n\r\n", True),
        # Not whole, or more after it: Tornado reads the rest.
        (PROBE[:-2], False),
        (PROBE + PROBE, False),
        (PROBE + b"x", False),
        # The client may send another request: closing could reset it unread.
        (b"GET /health/ready HTTP/1.1\r\nHost: a\r\n\r\n", False),
        (b"GET /health/ready HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", False),
        (b"GET /health/ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: close\r\n\r\n", False),
        (b"GET /health/ready HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", False),
        # An ID to echo, a body to read.
        (PROBE.replace(b"Connection", b"X-Request-ID: abc\r\nConnection"), False),
        (PROBE.replace(b"Connection", b"x-request-id: abc\r\nConnection"), False),
        (PROBE.replace(b"Connection", b"Content-Length: 2\r\nConnection"), False),
        (PROBE.replace(b"Connection", b"Transfer-Encoding: chunked\r\nConnection"), False),
        # Malformed: Tornado answers 400, and must be the one to.
        (b"GET /health/ready HTTP/1.1\r\nConnection: close\r\n\r\n", False),  # no Host
        (PROBE.replace(b"Connection", b"Host: b\r\nConnection"), False),  # two
        (PROBE.replace(b"Host: 127.0.0.1", b"Host: a,b"), False),
        (PROBE.replace(b"Host: 127.0.0.1", b"Host:"), False),
        (PROBE.replace(b"Connection", b"Foo: a\r\n b\r\nConnection"), False),  # a folded line
        (PROBE.replace(b"Connection", b"no colon\r\nConnection"), False),
        (PROBE.replace(b"Connection", b"Bad Name: a\r\nConnection"), False),
        (PROBE.replace(b"Connection", b"Name : a\r\nConnection"), False),
        (PROBE.replace(b"Connection", b"Foo: a\x00b\r\nConnection"), False),
        (PROBE.replace(b"Connection", b"Foo: a\rb\r\nConnection"), False),
        (PROBE.replace(b"Connection", "Foo: \u00e9\r\nConnection".encode()), False),
        (PROBE.replace(b"\r\n", b"\n"), False),
        # Another request altogether.
        (PROBE.replace(b"/health/ready ", b"/health/ready?verbose=1 "), False),
        (PROBE.replace(b"/health/ready ", b"/health/readyz "), False),
        (PROBE.replace(b"/health/ready ", b"/health/live "), False),  # its access line is INFO: Tornado logs it
        (PROBE.replace(b"GET ", b"HEAD "), False),
        (PROBE.replace(b"GET ", b"get "), False),
        (PROBE.replace(b"HTTP/1.1", b"HTTP/2.0"), False),
        (PROBE.replace(b"GET ", b"GET  "), False),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", False),  # a TLS hello
        (b"", False),
    ],
)
def test_only_a_whole_plain_readiness_probe_is_answered_at_accept(head, plain):
    assert is_plain_probe(head) is plain


def exchange(port: int, *pieces: bytes, pause: float = 0.0) -> tuple[int, dict[str, str], bytes]:
    """Send the pieces (pausing between them), read until the server closes; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for number, piece in enumerate(pieces):
            if number:
                time.sleep(pause)
            sock.sendall(piece)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    if int(headers.get("content-length", len(body))) < len(body):  # pipelined answers: keep the first
        body = body[: int(headers["content-length"])]
    return int(status_line.split()[1]), headers, body


def hold_in_a_revision(start_server, extra_revisions, sqlite_url, tmp_path):
    """A server migrating until the returned release() is called."""
    ini, add = extra_revisions
    released = tmp_path / "released"
    add(
        "0003",
        "0002",
        f"""
        if not is_linting():
            while not os.path.exists({str(released)!r}):
                real_time.sleep(0.02)
        """,
        imports="import os",
    )
    server = start_server(DATABASE_URL=sqlite_url, ALEMBIC_CONFIG=str(ini))
    server.wait_listening()
    wait_for(lambda: "Running upgrade 0002 -> 0003" in server.log, 20, "the held revision to start")
    return server, released.touch


def probes_counted(server) -> float:
    return value(scrape(server), "http_requests_total", handler="ReadyHandler", method="GET", code="503")


def test_a_starting_server_answers_plain_probes_at_accept_and_the_rest_through_tornado(
    start_server, extra_revisions, sqlite_url, tmp_path
):
    server, release = hold_in_a_revision(start_server, extra_revisions, sqlite_url, tmp_path)
    counted_before = probes_counted(server)

    status, headers, body = exchange(server.port, PROBE)
    assert (status, body) == (503, b'{"status":"migrating"}'), (status, headers, body)
    assert "server" not in headers, headers  # answered at accept
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert headers["content-length"] == str(len(body))
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"]), headers
    assert headers["date"].endswith(" GMT"), headers
    second = exchange(server.port, PROBE)[1]["x-request-id"]
    assert second != headers["x-request-id"]

    # What answering at accept leaves to Tornado is answered the same way, with Tornado's headers.
    left_to_tornado = {
        "an ID to echo": [PROBE.replace(b"Connection", b"X-Request-ID: probe-7\r\nConnection")],
        "a head in two packets": [PROBE[:20], PROBE[20:]],
        "two pipelined probes": [PROBE.replace(b"Connection: close", b"Connection: keep-alive") + PROBE],
    }
    for what, pieces in left_to_tornado.items():
        status, headers, body = exchange(server.port, *pieces, pause=0.2)
        assert (status, body) == (503, b'{"status":"migrating"}'), (what, status, headers, body)
        assert headers["server"].startswith("TornadoServer"), (what, headers)
    assert (
        exchange(server.port, PROBE.replace(b"Connection", b"X-Request-ID: probe-7\r\nConnection"))[1]["x-request-id"]
        == "probe-7"
    )

    # Malformed, it gets Tornado's 400, and is not counted as a probe.
    assert exchange(server.port, PROBE.replace(b"Host: 127.0.0.1\r\n", b""))[0] == 400

    # Every probe is counted in http_requests_total, whoever answered it (the scrapes are not probes).
    answered = 2 + 1 + 1 + 2 + 1
    assert probes_counted(server) - counted_before == answered

    release()
    server.wait_ready()
    status, headers, body = exchange(server.port, PROBE)
    assert status == 200 and body == b'{"status":"ready","revision":"0003"}', (status, headers, body)
    assert headers["server"].startswith("TornadoServer"), headers  # ready: Tornado pings the database
    assert "Traceback" not in server.log, server.log
    assert server.stop() == 0, server.log


def test_a_client_that_leaves_at_once_costs_nothing_and_breaks_nothing(
    start_server, extra_revisions, sqlite_url, tmp_path
):
    server, release = hold_in_a_revision(start_server, extra_revisions, sqlite_url, tmp_path)
    for _ in range(50):  # the probe sent, the connection reset before the answer could be written
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(PROBE)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    status, _, body = exchange(server.port, PROBE)
    assert (status, body) == (503, b'{"status":"migrating"}')
    release()
    server.wait_ready()
    assert "Traceback" not in server.log and "ERROR" not in server.log, server.log
    assert server.stop() == 0, server.log
