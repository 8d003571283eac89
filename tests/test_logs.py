"""--log-format: text by default; json is one object per line, request lines with their own fields, no secrets."""

import json
import logging
import socket

import pytest
from sqlalchemy.engine import make_url

from server.logs import (
    TEXT_FORMAT,
    EscapeControlCharacters,
    TextFormatter,
    add_request_id,
    make_json_formatter,
    request_id_var,
)

REQUIRED = {"time", "level", "logger", "message", "pid"}
REQUEST_FIELDS = {"method", "path", "status", "duration_ms"}
PASSWORD = "s3cretpw"


def json_lines(log: str) -> list[dict]:
    """Every line of the log as a JSON object with the required keys (an assertion names the first that is not)."""
    objects = []
    for line in log.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError(f"not JSON: {line!r}\n{log}") from None
        assert isinstance(obj, dict) and set(obj) >= REQUIRED, line
        objects.append(obj)
    return objects


def with_password(url: str) -> str:
    # Trust authentication ignores the password: the server connects, and the password is there to leak.
    return make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


@pytest.mark.postgres
def test_json_every_line_of_a_run_that_migrates_serves_logs_a_4xx_and_stops(start_server, postgres_url):
    url = with_password(postgres_url)
    assert PASSWORD in url
    server = start_server("--log-format=json", DATABASE_URL=url)
    server.wait_ready()
    assert server.get("/")[0] == 200
    assert server.request("GET", "/?limit=0", headers={"X-Request-ID": "json-trace-1"})[0] == 400
    assert server.request("POST", "/", b"not json")[0] == 400
    assert server.stop() == 0, server.log

    lines = json_lines(server.log)
    messages = [line["message"] for line in lines]
    assert any(m.startswith("applied revision 0002") for m in messages), messages
    assert "ready" in messages and "shutting down" in messages
    requests = [line for line in lines if line["logger"] == "tornado.access"]
    assert all(set(line) >= REQUEST_FIELDS for line in requests), requests
    bad_limit = [line for line in requests if line["path"] == "/" and line["method"] == "GET" and line["status"] == 400]
    assert len(bad_limit) == 1 and bad_limit[0]["request_id"] == "json-trace-1", requests
    assert bad_limit[0]["level"] == "WARNING" and isinstance(bad_limit[0]["duration_ms"], float)
    assert {line["pid"] for line in lines} == {server.process.pid}
    assert PASSWORD not in server.log_path.read_text(errors="replace")


@pytest.mark.postgres
def test_json_a_failed_start_is_one_error_object_without_the_password(start_server, postgres_url):
    url = make_url(with_password(postgres_url)).set(database="no_such_database_here")
    server = start_server("--log-format=json", "--db-wait=1", DATABASE_URL=url.render_as_string(hide_password=False))
    assert server.wait_exit() == 1, server.log
    lines = json_lines(server.log)
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1 and "no_such_database_here" in errors[0]["message"], server.log
    assert "exc_info" not in errors[0]
    assert PASSWORD not in server.log_path.read_text(errors="replace")


def test_text_is_the_default_and_stays_one_readable_line(start_server, sqlite_url):
    server = start_server(DATABASE_URL=sqlite_url)
    server.wait_ready()
    assert server.stop() == 0
    assert server.log.splitlines()[0].split(" ", 3)[2] == "INFO"
    assert not server.log.lstrip().startswith("{")
    # an upgrade's lines say what happened to the database, not which of Alembic's plugins loaded
    assert "applied revision 0002" in server.log and "setup plugin" not in server.log, server.log


def record(message: str, **extra) -> logging.LogRecord:
    made = logging.LogRecord("server", logging.WARNING, __file__, 1, message, (), None)
    made.__dict__.update(extra)
    return made


def test_the_request_id_of_the_current_request_is_added_to_its_lines():
    token = request_id_var.set("abc123")
    try:
        inside = record("inside")
        assert add_request_id(inside) and inside.request_id == "abc123"
    finally:
        request_id_var.reset(token)
    outside = record("outside")
    assert add_request_id(outside) and not hasattr(outside, "request_id")
    given = record("given", request_id="from-the-handler")
    request_id_var.set("other")
    assert add_request_id(given) and given.request_id == "from-the-handler"


def test_formatters_put_the_request_id_and_fields_where_readers_look():
    line = record("404 GET /x", request_id="r-1", method="GET", path="/x", status=404, duration_ms=0.5)
    assert TextFormatter(TEXT_FORMAT).format(line).endswith("404 GET /x [request r-1]")
    assert TextFormatter(TEXT_FORMAT).format(record("plain")).endswith("] plain")
    obj = json.loads(make_json_formatter().format(line))
    assert REQUIRED | REQUEST_FIELDS | {"request_id"} <= set(obj)
    assert (obj["level"], obj["logger"], obj["message"], obj["status"]) == ("WARNING", "server", "404 GET /x", 404)
    assert obj["time"].endswith("+00:00")


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
