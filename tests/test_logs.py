"""The log: control characters from outside reach it escaped."""

import logging
import socket

from server.logs import EscapeControlCharacters


def test_c0_and_c1_controls_are_escaped_and_tabs_kept():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "GET %s", ("/a\x85b\x9b[2Jc\nd\te\x7f",), None)
    assert EscapeControlCharacters().filter(record)
    assert record.getMessage() == "GET /a\\x85b\\x9b[2Jc\\x0ad\te\\x7f"


def test_c1_bytes_in_a_url_reach_the_server_log_escaped(start_server, sqlite_url):
    server = start_server(DATABASE_URL=sqlite_url)
    server.wait_listening()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /c1-\x85-\x9b[31m-end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 404")
    assert server.stop() == 0, server.log
    raw = server.log_path.read_bytes()
    assert b"/c1-\\x85-\\x9b[31m-end" in raw, raw[-2000:]
    assert "\x85".encode() not in raw and "\x9b".encode() not in raw and b"\x9b" not in raw
