"""Readiness probes answered as they are accepted while the service starts, before Tornado reads them.

Tornado spends about 0.3 ms of the main thread on a probe's connection (a stream, a request, a handler),
and while revisions run, the migrator thread waits for the GIL through each of them: probed every 5 ms, an
upgrade through 200 revisions took 15% longer. While the service is starting, the answer to
`GET /health/ready` is fixed: 503 and the phase. Here it is written straight to the socket, for a third of
the time.

Only a request read whole and understood is answered here. It must have come in the first packet
(TCP_DEFER_ACCEPT hands over a connection once its client has sent), be exactly `GET /health/ready` in
well-formed HTTP/1.x, and say that the client sends nothing more (`Connection: close`, as Kubernetes'
probes do; HTTP/1.0 without keep-alive), so that closing never resets a request not yet read. It must
carry no body and no X-Request-ID to echo, and access lines at DEBUG (how Tornado logs these probes) must
be off. Anything else, malformed heads included, stays in the socket for Tornado: it was peeked at, not
read.
"""

import logging
import re
import socket
import time

import orjson
import tornado.httputil
import tornado.log

from server.web.handlers import REQUEST_ID_HEADER, new_request_id
from server.web.health import ReadyHandler
from server.web.metrics import Metrics
from server.web.state import ServiceState

PEEK_BYTES = 4096  # a probe's head is a few hundred bytes; a longer one is not a plain probe
HEAD_END = b"\r\n\r\n"
_REQUEST_LINE = re.compile(rb"GET /health/ready HTTP/1\.([01])")
# A header line as RFC 9110 has it: a token, a colon, a value of visible ASCII. Whitespace around the value
# has one way to match, so a line that fails does so in linear time.
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(?:([\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)[ \t]*)?")
_HOST = re.compile(rb"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")  # a name or an address, a port
# A body to read, or an ID to echo: Tornado's work.
LEFT_TO_TORNADO = (b"content-length", b"transfer-encoding", REQUEST_ID_HEADER.lower().encode())


def is_plain_probe(head: bytes) -> bool:
    """Whether head is one whole, well-formed `GET /health/ready`, nothing after it, and the client's last:
    HTTP/1.1 with one Host and `Connection: close`, or HTTP/1.0 without a Connection header. No body, no ID."""
    if not head.endswith(HEAD_END):
        return False
    request_line, *lines = head[: -len(HEAD_END)].split(b"\r\n")  # a bare LF stays in a line, which fails
    version = _REQUEST_LINE.fullmatch(request_line)
    if version is None:
        return False
    fields: dict[bytes, list[bytes]] = {}
    for line in lines:
        field = _FIELD.fullmatch(line)
        if field is None:
            return False
        fields.setdefault(field[1].lower(), []).append(field[2] or b"")
    if any(name in fields for name in LEFT_TO_TORNADO):
        return False
    hosts, connection = fields.get(b"host", []), fields.get(b"connection", [])
    if not all(_HOST.fullmatch(host) for host in hosts):
        return False
    if version[1] == b"0":
        return len(hosts) <= 1 and not connection
    return len(hosts) == 1 and [value.lower() for value in connection] == [b"close"]


class StartupProbes:
    """GuardedHTTPServer's answer_at_accept: answers a plain readiness probe while the service starts."""

    def __init__(self, state: ServiceState, metrics: Metrics | None):
        self.state = state
        self.metrics = metrics

    def answer(self, connection: socket.socket) -> bool:
        """Answer the connection's request and close it, if it is a plain probe and the service is starting."""
        if not self.state.starting or tornado.log.access_log.isEnabledFor(logging.DEBUG):
            return False
        started = time.perf_counter()
        try:
            head = connection.recv(PEEK_BYTES + 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:  # nothing sent yet (no TCP_DEFER_ACCEPT here), or already gone: Tornado's to handle
            return False
        if len(head) > PEEK_BYTES or not is_plain_probe(head):
            return False
        try:
            # Read what was peeked: closing with unread bytes would reset the connection, losing the answer.
            connection.recv(len(head), socket.MSG_DONTWAIT)
            connection.send(self.response(), socket.MSG_DONTWAIT)
        except OSError:
            pass  # the client left: nobody to answer
        connection.close()
        if self.metrics is not None:
            self.metrics.observe(ReadyHandler, "GET", 503, time.perf_counter() - started)
        return True

    def response(self) -> bytes:
        """What ReadyHandler answers while not ready, and that the connection closes."""
        body = orjson.dumps({"status": self.state.phase})
        return (
            b"HTTP/1.1 503 Service Unavailable\r\n"
            b"Content-Type: application/json\r\n"
            b"%s: %s\r\n"
            b"Date: %s\r\n"
            b"Content-Length: %d\r\n"
            b"Connection: close\r\n"
            b"\r\n%s"
        ) % (
            REQUEST_ID_HEADER.encode(),
            new_request_id().encode(),
            tornado.httputil.format_timestamp(time.time()).encode(),
            len(body),
            body,
        )
