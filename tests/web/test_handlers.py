"""The HTTP contract (DESIGN.md, "HTTP"), against the app in-process on SQLite and on PostgreSQL."""

import asyncio
import json
import re
import socket
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from sqlalchemy import insert
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from conftest import make_settings
from server.db import make_engine, make_session_factory
from server.errors import Phase
from server.models import my_table
from server.web.app import make_app
from server.web.state import ServiceState

ID_MAX = 2**31 - 1
HEAD_REVISION = "0002"
# pytest-tornado's default of 5 s is tight for a thousand rows on a loaded machine.
GEN_TEST_TIMEOUT = 30


# --- helpers -----------------------------------------------------------------------------------------


def json_body(response) -> object:
    """The decoded body of a response that must be JSON by its Content-Type."""
    content_type = response.headers.get("Content-Type", "")
    assert content_type.split(";")[0].strip() == "application/json", (content_type, response.body[:200])
    return json.loads(response.body)


def error_message(response, status: int) -> str:
    """The message of an {"error": message} answer with this status."""
    assert response.code == status, (response.code, response.body[:300])
    body = json_body(response)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"], body
    return body["error"]


def assert_retry_after(response) -> None:
    value = response.headers.get("Retry-After")
    assert value is not None, dict(response.headers)
    assert value.isdigit() and int(value) >= 1, value


def name_body(name: str) -> bytes:
    return json.dumps({"name": name}, ensure_ascii=False).encode()


async def get(http_client, base_url: str, path: str):
    return await http_client.fetch(base_url + path, raise_error=False)


async def post(http_client, base_url: str, body: bytes, path: str = "/"):
    return await http_client.fetch(
        base_url + path,
        method="POST",
        body=body,
        headers={"Content-Type": "application/json"},
        raise_error=False,
    )


async def post_name(http_client, base_url: str, name: str) -> dict:
    """POST a valid name and return the stored row, checking its shape."""
    response = await post(http_client, base_url, name_body(name))
    assert response.code == 201, (response.code, response.body[:300])
    row = json_body(response)
    assert_row_shape(row)
    return row


def assert_row_shape(row: object) -> None:
    assert isinstance(row, dict) and set(row) == {"id", "name", "created_at"}, row
    assert type(row["id"]) is int and 1 <= row["id"] <= ID_MAX, row
    assert isinstance(row["name"], str), row
    created_at = row["created_at"]
    assert isinstance(created_at, str), row
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)", created_at), created_at
    parsed = datetime.fromisoformat(created_at)
    assert parsed.utcoffset() is not None, created_at
    # The database's clock is this machine's: a stored row is from just now, whatever its time zone.
    assert abs(datetime.now(UTC) - parsed) < timedelta(minutes=5), created_at


async def get_page(http_client, base_url: str, query: str = "") -> dict:
    response = await get(http_client, base_url, "/" + query)
    assert response.code == 200, (response.code, response.body[:300])
    page = json_body(response)
    assert isinstance(page, dict) and set(page) == {"items", "next"}, page
    assert isinstance(page["items"], list), page
    for row in page["items"]:
        assert_row_shape(row)
    assert page["next"] == (page["items"][-1]["id"] if page["items"] else None), page
    return page


async def insert_rows(engine, count: int) -> None:
    """Rows straight into the table, for pages larger than POSTing one by one would make quick."""
    async with engine.begin() as connection:
        await connection.execute(insert(my_table), [{"name": f"row {i}"} for i in range(count)])


# --- reading and writing rows ------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
async def test_get_empty_table(http_client, base_url):
    response = await get(http_client, base_url, "/")
    assert response.code == 200
    assert json_body(response) == {"items": [], "next": None}


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
async def test_post_returns_stored_row_and_get_returns_it_unchanged(http_client, base_url):
    row = await post_name(http_client, base_url, "first row")
    assert row["name"] == "first row"
    assert await get_page(http_client, base_url) == {"items": [row], "next": row["id"]}


AWKWARD_NAMES = [
    pytest.param("😀🎉👍🏽 👩‍👩‍👧‍👦", id="emoji"),
    pytest.param("漢字かなカナ한국어", id="cjk"),
    pytest.param("e\u0301 A\u030a \u212b Z\u0324\u0354\u0367\u0311", id="combining-marks-not-normalised"),
    pytest.param("مرحبا \u202eevil\u202c", id="rtl-and-bidi-controls"),
    pytest.param("quote \" and 'single' and `back`", id="quotes"),
    pytest.param("back\\slash \\n \\u0000 \\", id="backslashes"),
    pytest.param("🦄" * 50, id="50-four-byte-emoji"),
    pytest.param("名" * 50, id="50-cjk"),
    pytest.param(" ", id="one-space"),
    pytest.param("  leading and trailing  ", id="outer-spaces"),
    pytest.param("\t\n\r \u00a0\u2028\u2029\u200b\ufeff", id="whitespace-and-invisibles"),
    pytest.param("<script>alert(1)</script>", id="html"),
    pytest.param("'; DROP TABLE my_table; --", id="sql"),
    pytest.param("\x01\x1f\x7f", id="control-characters"),
]


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
@pytest.mark.parametrize("name", AWKWARD_NAMES)
async def test_awkward_names_round_trip_exactly(http_client, base_url, name):
    row = await post_name(http_client, base_url, name)
    assert row["name"] == name
    page = await get_page(http_client, base_url)
    assert page["items"] == [row]
    assert page["items"][0]["name"] == name


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
async def test_names_with_escaped_json_round_trip(http_client, base_url):
    """The same text sent as JSON \\u escapes (surrogate pairs included) is stored as the characters."""
    name = '🦄 é " \\ /'
    row = await post_name(http_client, base_url, name)  # raw UTF-8
    response = await post(http_client, base_url, json.dumps({"name": name}, ensure_ascii=True).encode())
    assert response.code == 201, response.body
    escaped_row = json_body(response)
    assert escaped_row["name"] == name
    assert escaped_row["id"] > row["id"]
    assert [item["name"] for item in (await get_page(http_client, base_url))["items"]] == [name, name]


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
async def test_concurrent_posts_each_get_their_own_row(http_client, base_url):
    names = [f"concurrent {i}" for i in range(20)]
    rows = await asyncio.gather(*(post_name(http_client, base_url, name) for name in names))
    assert [row["name"] for row in rows] == names
    assert len({row["id"] for row in rows}) == len(names)
    page = await get_page(http_client, base_url)
    assert page["items"] == sorted(rows, key=lambda row: row["id"])


# --- pagination ----------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
async def test_pagination_walks_every_row_once_in_order(http_client, base_url):
    inserted = [(await post_name(http_client, base_url, f"row {i}"))["id"] for i in range(7)]
    assert inserted == sorted(set(inserted))

    seen, page_sizes, after = [], [], 0
    for _ in range(10):  # bounded: a page that never empties fails below instead of looping forever
        page = await get_page(http_client, base_url, f"?limit=3&after={after}")
        page_sizes.append(len(page["items"]))
        if not page["items"]:
            assert page["next"] is None
            break
        ids = [item["id"] for item in page["items"]]
        assert all(i > after for i in ids), (after, ids)
        assert page["next"] == ids[-1]
        seen.extend(ids)
        after = page["next"]
    assert page_sizes == [3, 3, 1, 0]
    assert seen == inserted  # strictly ascending, no duplicates, no gaps


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
async def test_pagination_after_skips_rows_up_to_and_including_it(http_client, base_url):
    ids = [(await post_name(http_client, base_url, f"row {i}"))["id"] for i in range(4)]
    page = await get_page(http_client, base_url, f"?after={ids[1]}")
    assert [item["id"] for item in page["items"]] == ids[2:]
    assert await get_page(http_client, base_url, f"?after={ID_MAX}") == {"items": [], "next": None}
    first = await get_page(http_client, base_url, "?after=0&limit=1")
    assert [item["id"] for item in first["items"]] == ids[:1]
    assert first["next"] == ids[0]


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
async def test_stored_timestamps_read_back_as_utc_to_the_microsecond(http_client, base_url, engine):
    """On SQLite the handlers read rows through sqlite3 itself (web/queries.py), and a timestamp comes back as
    the text SQLAlchemy stored: it must still say what SQLAlchemy's type said, on either database."""
    moments = [
        datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),  # no fraction: none is written
        datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    ]
    async with engine.begin() as connection:
        await connection.execute(
            insert(my_table), [{"name": f"at {i}", "created_at": moment} for i, moment in enumerate(moments)]
        )
    page = json_body(await get(http_client, base_url, "/"))
    assert [item["created_at"] for item in page["items"]] == [
        "2026-01-02T03:04:05.123456+00:00",
        "1999-12-31T23:59:59+00:00",
        "0001-01-01T00:00:00.000001+00:00",
    ], page


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
async def test_default_limit_is_50(http_client, base_url, engine):
    await insert_rows(engine, 51)
    page = await get_page(http_client, base_url)
    assert len(page["items"]) == 50
    rest = await get_page(http_client, base_url, f"?after={page['next']}")
    assert len(rest["items"]) == 1
    assert rest["items"][0]["id"] > page["next"]


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
async def test_limit_1000_is_allowed(http_client, base_url, engine):
    await insert_rows(engine, 1001)
    page = await get_page(http_client, base_url, "?limit=1000")
    ids = [item["id"] for item in page["items"]]
    assert len(ids) == 1000
    assert ids == sorted(set(ids))
    rest = await get_page(http_client, base_url, f"?limit=1000&after={page['next']}")
    assert len(rest["items"]) == 1


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
async def test_unknown_query_parameters_are_ignored(http_client, base_url):
    ids = [(await post_name(http_client, base_url, f"row {i}"))["id"] for i in range(3)]
    # Names are case-sensitive, so LIMIT is unknown too; an unknown value that is not even UTF-8 is no error.
    page = await get_page(http_client, base_url, "?limit=2&foo=bar&LIMIT=abc&x=%ff&flag&after=0")
    assert [item["id"] for item in page["items"]] == ids[:2]
    assert page["next"] == ids[1]


BAD_QUERIES = [
    ("limit", "0"),
    ("limit", "1001"),
    ("limit", "-1"),
    ("limit", "abc"),
    ("limit", "1.5"),
    ("limit", ""),
    ("limit", " 5"),
    ("limit", "5 "),
    ("limit", "+5"),
    ("limit", "5_0"),
    ("limit", "0x10"),
    ("limit", "٣"),
    ("limit", "５"),  # fullwidth digit
    ("limit", "99999999999999999999"),
    ("limit", "9" * 5000),
    ("after", "-1"),
    ("after", "2147483648"),
    ("after", "abc"),
    ("after", "1e3"),
    ("after", ""),
    ("after", "9" * 5000),
]


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
@pytest.mark.parametrize(
    "parameter, value",
    [pytest.param(p, v, id=f"{p}={v!r}" if len(v) <= 20 else f"{p}={len(v)}-digits") for p, v in BAD_QUERIES],
)
async def test_bad_query_value_is_400(http_client, base_url, parameter, value):
    await post_name(http_client, base_url, "a row")  # a 400, not an empty page, with rows to show
    response = await get(http_client, base_url, f"/?{parameter}={quote(value, safe='')}")
    assert parameter in error_message(response, 400)


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
@pytest.mark.parametrize("parameter", ["limit", "after"])
@pytest.mark.parametrize("encoded", ["%ff", "%c3%28", "%ed%a0%80", "1%80"])
async def test_query_value_of_invalid_utf8_is_400(http_client, base_url, parameter, encoded):
    response = await get(http_client, base_url, f"/?{parameter}={encoded}")
    message = error_message(response, 400)
    assert message.startswith(f"{parameter} must be an integer"), message  # not Tornado's "Invalid unicode in"


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nno final boundary"),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: bogus\r\n\r\nx\r\n--xyz--"),
        ("multipart/form-data", b"no boundary at all"),
    ],
)
async def test_tornado_s_own_messages_never_reach_a_body(http_client, base_url, content_type, body):
    response = await http_client.fetch(
        base_url + "/", method="POST", body=body, headers={"Content-Type": content_type}, raise_error=False
    )
    message = error_message(response, 400)
    assert message == "bad request: the request line, query string, headers or body could not be read", message


# --- bad bodies ----------------------------------------------------------------------------------------

BAD_BODIES = [
    pytest.param(b"", id="empty"),
    pytest.param(b"not json", id="not-json"),
    pytest.param(b'{"name": "x"', id="truncated"),
    pytest.param(b'["x"]', id="array"),
    pytest.param(b'"x"', id="string"),
    pytest.param(b"5", id="number"),
    pytest.param(b"null", id="null"),
    pytest.param(b"{}", id="empty-object"),
    pytest.param(b'{"name": 5}', id="name-number"),
    pytest.param(b'{"name": null}', id="name-null"),
    pytest.param(b'{"name": true}', id="name-bool"),
    pytest.param(b'{"name": ["x"]}', id="name-array"),
    pytest.param(b'{"name": {"name": "x"}}', id="name-object"),
    pytest.param(b'{"name": ""}', id="name-empty"),
    pytest.param(name_body("a" * 51), id="51-ascii"),
    pytest.param(name_body("🦄" * 51), id="51-four-byte-emoji"),
    pytest.param(b'{"name": "a\\u0000b"}', id="nul-escape"),
    pytest.param(b'{"name": "a\\ud800b"}', id="lone-high-surrogate-escape"),
    pytest.param(b'{"name": "a\\udc00"}', id="lone-low-surrogate-escape"),
    pytest.param(b'{"name": "\xff\xfe"}', id="invalid-utf8"),
    pytest.param(b'{"name": "\xed\xa0\x80"}', id="utf8-encoded-surrogate"),
    pytest.param(b'{"name": "\xc0\xaf"}', id="overlong-utf8"),
    pytest.param(b'\xef\xbb\xbf{"name": "x"}', id="utf8-bom"),
    pytest.param('{"name": "x"}'.encode("utf-16"), id="utf16"),
    # Far past orjson's 1024 levels, and within the 64 KiB a body may have.
    pytest.param(b"[" * 30_000 + b"]" * 30_000, id="30000-nested-arrays"),
    pytest.param(b'{"name": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", id="30000-nested-in-name"),
    pytest.param(b'{"name": "x", "extra": 1}', id="extra-field"),
    pytest.param(b'{"Name": "x"}', id="wrong-key-case"),
    pytest.param(b'{"name": "x"} {"name": "y"}', id="two-documents"),
    pytest.param(b'{"name": NaN}', id="nan"),
]


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
@pytest.mark.parametrize("body", BAD_BODIES)
async def test_bad_body_is_400_and_stores_nothing(http_client, base_url, body):
    response = await post(http_client, base_url, body)
    error_message(response, 400)
    # The server keeps serving, and the bad request left no row behind.
    assert await get_page(http_client, base_url) == {"items": [], "next": None}
    assert (await post_name(http_client, base_url, "after a bad body"))["name"] == "after a bad body"


# --- bodies over 64 KiB --------------------------------------------------------------------------------


async def raw_exchange(reader, writer, request: bytes, body_parts=()) -> tuple[int, dict, bytes]:
    """Send a request (head, then body parts) on an open connection and read one whole response."""
    writer.write(request)
    for part in body_parts:
        writer.write(part)
        await writer.drain()
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


def oversized_request(size: int, framing: str) -> tuple[bytes, list[bytes]]:
    """A POST / whose body is size bytes, framed by Content-Length or sent in 16 KiB chunks."""
    body = b'{"name": "' + b"x" * (size - 12) + b'"}'
    if framing == "content-length":
        head = f"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        return head, [body[i : i + 65536] for i in range(0, len(body), 65536)]
    head = b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = [body[i : i + 16384] for i in range(0, len(body), 16384)]
    return head, [b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks] + [b"0\r\n\r\n"]


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("size", [100 * 1024, 1024 * 1024], ids=["100KiB", "1MiB"])
async def test_a_body_over_64_kib_is_413_read_in_full_and_the_server_goes_on(http_client, base_url, framing, size):
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        # A reset here (ConnectionResetError, IncompleteReadError) is the bug: the answer must be read.
        status, headers, body = await raw_exchange(reader, writer, *oversized_request(size, framing))
        assert status == 413, (status, body[:300])
        assert headers["content-type"].startswith("application/json"), headers
        assert json.loads(body) == {"error": "request body too large: at most 64 KiB"}
        # The body was read to its end: the same connection takes the next request.
        status, _, body = await raw_exchange(reader, writer, b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (status, json.loads(body)) == (200, {"items": [], "next": None})
    finally:
        writer.close()
        await writer.wait_closed()
    # And so does a new connection; the refused body stored nothing.
    assert await get_page(http_client, base_url) == {"items": [], "next": None}
    assert (await post_name(http_client, base_url, "after a big body"))["name"] == "after a big body"


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
async def test_a_body_of_exactly_64_kib_reaches_the_handler(http_client, base_url):
    response = await post(http_client, base_url, b'{"name": "' + b"x" * (64 * 1024 - 12) + b'"}')
    assert "50 characters" in error_message(response, 400)


# --- unknown paths and methods -------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
@pytest.mark.parametrize("method, path", [("GET", "/nope"), ("GET", "/health"), ("POST", "/nope/deeper")])
async def test_unknown_path_is_json_404(http_client, base_url, method, path):
    response = await http_client.fetch(
        base_url + path, method=method, body=b"{}" if method == "POST" else None, raise_error=False
    )
    error_message(response, 404)


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_unsupported_method_is_json_405(http_client, base_url, method):
    response = await http_client.fetch(
        base_url + "/", method=method, body=None if method == "DELETE" else name_body("x"), raise_error=False
    )
    error_message(response, 405)
    assert await get_page(http_client, base_url) == {"items": [], "next": None}


# --- health and readiness ------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
async def test_ready_reports_head_revision(http_client, base_url):
    response = await get(http_client, base_url, "/health/ready")
    assert response.code == 200
    assert json_body(response) == {"status": "ready", "revision": HEAD_REVISION}
    live = await get(http_client, base_url, "/health/live")
    assert live.code == 200
    assert isinstance(json_body(live), dict)


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
@pytest.mark.parametrize("phase", ["migrating", "waiting"])
async def test_not_ready_data_endpoints_answer_503_with_retry_after(http_client, base_url, state, phase):
    state.set_phase(phase)

    response = await get(http_client, base_url, "/")
    error_message(response, 503)
    assert_retry_after(response)

    response = await post(http_client, base_url, name_body("while not ready"))
    error_message(response, 503)
    assert_retry_after(response)

    live = await get(http_client, base_url, "/health/live")
    assert live.code == 200
    assert isinstance(json_body(live), dict)

    ready = await get(http_client, base_url, "/health/ready")
    assert ready.code == 503
    assert json_body(ready) == {"status": phase}

    # Back to ready: the refused POST stored nothing, and data is served again.
    state.set_phase(Phase.READY)
    assert await get_page(http_client, base_url) == {"items": [], "next": None}
    assert (await get(http_client, base_url, "/health/ready")).code == 200


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
async def test_every_kind_of_answer_leaves_no_request_in_flight(http_client, base_url, state):
    """Shutdown waits for state.in_flight to reach zero: no answer, error or not, may leave it counted."""
    await post_name(http_client, base_url, "x")
    await get_page(http_client, base_url)
    assert (await get(http_client, base_url, "/?limit=0")).code == 400
    assert (await get(http_client, base_url, "/?limit=%ff")).code == 400
    assert (await post(http_client, base_url, b"[")).code == 400
    assert (await get(http_client, base_url, "/nope")).code == 404
    assert (await http_client.fetch(base_url + "/", method="DELETE", raise_error=False)).code == 405
    assert (await get(http_client, base_url, "/health/ready")).code == 200
    state.set_phase(Phase.MIGRATING)
    assert (await get(http_client, base_url, "/")).code == 503
    assert (await get(http_client, base_url, "/health/ready")).code == 503
    assert state.in_flight == 0


# --- the database gone ---------------------------------------------------------------------------------


@pytest.fixture
def closed_port():
    """A local port bound but not listening, held for the test: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def gone_base_url(io_loop, closed_port):
    """A ready app whose PostgreSQL database does not answer, served on its own port."""
    settings = make_settings(f"postgresql://postgres@127.0.0.1:{closed_port}/x")
    engine = make_engine(settings.database_url)
    server = HTTPServer(make_app(make_session_factory(engine, settings), ServiceState(Phase.READY)))
    sock, port = bind_unused_port()
    server.add_socket(sock)
    yield f"http://127.0.0.1:{port}"
    server.stop()
    io_loop.run_sync(server.close_all_connections, timeout=10)
    io_loop.run_sync(engine.dispose)


@pytest.mark.gen_test(timeout=GEN_TEST_TIMEOUT)
async def test_database_gone_answers_503_not_500(gone_base_url):
    client = AsyncHTTPClient(force_instance=True)
    try:
        response = await get(client, gone_base_url, "/")
        assert "database" in error_message(response, 503)
        assert_retry_after(response)

        response = await post(client, gone_base_url, name_body("nowhere to go"))
        assert "database" in error_message(response, 503)
        assert_retry_after(response)

        # Validation needs no database: a bad body is still the client's mistake.
        error_message(await post(client, gone_base_url, b"{}"), 400)

        ready = await get(client, gone_base_url, "/health/ready")
        assert ready.code == 503
        assert json_body(ready) == {"status": "unavailable"}

        live = await get(client, gone_base_url, "/health/live")
        assert live.code == 200
    finally:
        client.close()
