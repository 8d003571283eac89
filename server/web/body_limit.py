"""Request bodies over the limit answered 413 with a JSON error the client can read, on every route."""

import logging

import orjson
from tornado import httputil

log = logging.getLogger("tornado.access")

BODY_LIMIT = 64 * 1024  # a row is a 50-character name
# A body over the limit is still read to its end (and thrown away) up to this size, so that the 413 is
# read by the client: closing a socket with unread data makes the kernel send a reset, and the client
# loses the answer. Beyond it Tornado's own bare 400 and close remain.
DRAIN_LIMIT = 16 * 1024 * 1024
TOO_LARGE = orjson.dumps({"error": f"request body too large: at most {BODY_LIMIT // 1024} KiB"})


class BodyLimit(httputil.HTTPMessageDelegate):
    """Passes a request to the application's delegate until its body grows past BODY_LIMIT; from then on
    reads the rest without keeping it and answers 413 itself. The body was read to its end, so the
    connection stays usable for the next request."""

    def __init__(self, inner: httputil.HTTPMessageDelegate, request_conn: httputil.HTTPConnection):
        self.inner, self.request_conn = inner, request_conn
        self.received = 0
        self.refused = False
        self.start_line: httputil.RequestStartLine | None = None
        request_conn.set_max_body_size(DRAIN_LIMIT)

    def headers_received(self, start_line, headers):
        self.start_line = start_line
        length = headers.get("Content-Length", "")
        if length.isascii() and length.isdigit() and int(length) > BODY_LIMIT:
            self.refused = True  # known from the headers: the application never sees this request
            return None
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes):
        if self.refused:
            return None
        self.received += len(chunk)
        if self.received > BODY_LIMIT:  # a chunked body grew past the limit: the application lets go of it
            self.refused = True
            self.inner.on_connection_close()
            return None
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        if not self.refused:
            self.inner.finish()
            return
        self.request_conn.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", 413, "Payload Too Large"),
            httputil.HTTPHeaders({"Content-Type": "application/json", "Content-Length": str(len(TOO_LARGE))}),
            TOO_LARGE,
        )
        self.request_conn.finish()
        log.warning("413 %s %s: body over %d bytes", self.start_line.method, self.start_line.path, BODY_LIMIT)

    def on_connection_close(self) -> None:
        if not self.refused:
            self.inner.on_connection_close()
