"""Connection limits: descriptors, idle and slow sockets, a cap that sheds idle connections, and a drain."""

import asyncio
import errno
import logging
import resource
import socket
import time
from collections.abc import Callable

import tornado.httpserver
import tornado.httputil
import tornado.ioloop
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection

log = logging.getLogger("server")

# Descriptors kept back from the cap for what is not a client: the listening sockets, the database pool
# (an SQLite connection holds up to three files), logs, the event loop's own.
RESERVED_DESCRIPTORS_MIN = 64
ACCEPT_PAUSE = 0.1  # seconds accepting rests when the process is out of descriptors
REPORT_INTERVAL = 10.0  # at most one line per this many seconds about refused or shed connections
# Tornado's default backlog of 128 overflows under a burst of connects, and a dropped SYN costs its client
# a full second before the retry: a probe among them would miss its deadline. The kernel caps it at
# net.core.somaxconn (4096 since Linux 5.4).
LISTEN_BACKLOG = 4096
ACCEPT_BATCH = 128  # connections taken per readiness event, as Tornado's accept loop does


def defer_accept(sockets: list[socket.socket], seconds: float) -> None:
    """Hand a connection to the server only once its client has sent something (Linux; nginx's `deferred`).

    Until then the kernel holds it without a descriptor, so a flood of silent sockets costs the server
    nothing; one still silent after `seconds` is handed over anyway and meets the idle timeout."""
    if not hasattr(socket, "TCP_DEFER_ACCEPT"):
        return
    for sock in sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, max(1, round(seconds)))


def make_http_server(
    app, settings, max_body_size: int, answer_at_accept: Callable[[socket.socket], bool] | None = None
) -> "GuardedHTTPServer":
    """The HTTP server: idle and slow sockets timed out, connections capped below the descriptor limit;
    answer_at_accept may answer and close a connection as it is accepted (True), before Tornado sees it."""
    return GuardedHTTPServer(
        app,
        max_body_size=max_body_size,
        idle_connection_timeout=settings.idle_timeout,
        body_timeout=settings.idle_timeout,
        max_connections=connection_cap(raise_descriptor_limit(), settings.pool_size + settings.pool_max_overflow),
        answer_at_accept=answer_at_accept,
    )


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
    return soft


def connection_cap(descriptor_limit: int, pool_width: int) -> int:
    """How many client connections to hold open at most, for a process allowed descriptor_limit files."""
    reserved = max(RESERVED_DESCRIPTORS_MIN, descriptor_limit // 8) + 3 * pool_width
    return max(descriptor_limit - reserved, 16)


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """An HTTPServer that survives descriptor floods and drains without reading new requests.

    Tornado's accept loop logs and spins on EMFILE, and it keeps every connection until the client goes.
    Here every connection is tracked as idle (waiting for a request's headers) or busy (a request read);
    at the cap the oldest idle connection is closed to make room, and on EMFILE accepting pauses briefly.
    """

    def initialize(
        self, *args, max_connections: int, answer_at_accept: Callable[[socket.socket], bool] | None = None, **kwargs
    ) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections
        self.answer_at_accept = answer_at_accept
        self.draining = False
        # Insertion order is age order: a connection moves to the end each time it becomes idle again.
        self._idle_since: dict[HTTP1ServerConnection, float] = {}
        self._busy: dict[HTTP1ServerConnection, HTTP1Connection] = {}
        self._refused = self._shed = self._paused = 0
        self._report_timer = None

    # --- accepting -----------------------------------------------------------------------------------

    def add_sockets(self, sockets) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._accept_on(sock)

    def _accept_on(self, sock: socket.socket) -> Callable[[], None]:
        """Tornado's add_accept_handler, except that running out of descriptors pauses instead of spinning."""
        io_loop = tornado.ioloop.IOLoop.current()
        listening = {"on": True, "paused": None}

        def resume() -> None:
            listening["paused"] = None
            if listening["on"]:
                io_loop.add_handler(sock, accept, io_loop.READ)

        def accept(_fd, _events) -> None:
            for _ in range(ACCEPT_BATCH):
                if not listening["on"]:
                    return
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EMFILE, errno.ENFILE):
                        raise
                    if not self._shed_oldest_idle():
                        self._paused += 1
                        io_loop.remove_handler(sock)
                        listening["paused"] = io_loop.call_later(ACCEPT_PAUSE, resume)
                    self._report()
                    return
                if self.answer_at_accept is not None and self.answer_at_accept(connection):
                    continue  # answered and closed: it never counted against the cap
                if len(self._connections) >= self.max_connections:
                    if not self._shed_oldest_idle():
                        connection.close()  # every connection is busy with a request: this one must wait
                        self._refused += 1
                        self._report()
                        continue
                    self._report()
                self._handle_connection(connection, address)

        def remove() -> None:
            listening["on"] = False
            if listening["paused"] is not None:
                io_loop.remove_timeout(listening["paused"])
            else:
                io_loop.remove_handler(sock)
            if self._report_timer is not None:
                io_loop.remove_timeout(self._report_timer)
                self._report_timer = None

        io_loop.add_handler(sock, accept, io_loop.READ)
        return remove

    def _shed_oldest_idle(self) -> bool:
        for connection in self._idle_since:
            self._shed += 1
            self._close(connection)
            return True
        return False

    def _report(self) -> None:
        """A line at the first shed or refusal, then one per REPORT_INTERVAL while they go on."""
        if self._report_timer is None:
            self._log_report()
            self._report_timer = tornado.ioloop.IOLoop.current().call_later(REPORT_INTERVAL, self._report_due)

    def _report_due(self) -> None:
        self._report_timer = None
        if self._shed or self._refused:
            self._report()

    def _log_report(self) -> None:
        log.warning(
            "connection limit reached (%d open, cap %d, %d files allowed): %d idle connections closed, "
            "%d refused, accepting paused %d times for lack of descriptors",
            len(self._connections),
            self.max_connections,
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            self._shed,
            self._refused,
            self._paused,
        )
        self._shed = self._refused = self._paused = 0

    # --- tracking idle and busy connections ------------------------------------------------------------

    def start_request(self, server_conn, request_conn) -> tornado.httputil.HTTPMessageDelegate:
        self._idle(server_conn)
        return _Tracked(super().start_request(server_conn, request_conn), self, server_conn, request_conn)

    def on_close(self, server_conn) -> None:
        self._idle_since.pop(server_conn, None)
        self._busy.pop(server_conn, None)
        super().on_close(server_conn)

    def _idle(self, server_conn) -> None:
        self._busy.pop(server_conn, None)
        self._idle_since.pop(server_conn, None)
        if self.draining:
            self._close(server_conn)
        else:
            self._idle_since[server_conn] = time.monotonic()

    def _begin(self, server_conn, request_conn) -> None:
        self._idle_since.pop(server_conn, None)
        self._busy[server_conn] = request_conn
        if self.draining:
            close_after_response(request_conn)

    def _close(self, server_conn) -> None:
        self._idle_since.pop(server_conn, None)  # at once: the request loop calls on_close only later
        server_conn.stream.close()

    # --- shutting down ---------------------------------------------------------------------------------

    async def drain(self, grace: float) -> int:
        """Read no request from now on: idle connections close now, busy ones once their response is written.

        Returns how many connections were still open when the grace ran out."""
        self.draining = True
        for server_conn in list(self._idle_since):
            self._close(server_conn)
        for request_conn in self._busy.values():
            close_after_response(request_conn)
        deadline = time.monotonic() + grace
        # A connection leaves _connections only once its last response is written (or it broke): waiting
        # for handlers alone would close sockets whose answers are still in the send buffer.
        while self._connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return len(self._connections)


def close_after_response(request_conn: HTTP1Connection) -> None:
    """Answer the request being served with `Connection: close`, then close, reading nothing more.

    Tornado has no public switch for this; its HTTP1Connection decides by this attribute (tested in
    tests/web/test_connections.py, so a Tornado that renames it fails loudly)."""
    if not hasattr(request_conn, "_disconnect_on_finish"):
        raise RuntimeError("tornado.http1connection.HTTP1Connection no longer has _disconnect_on_finish")
    request_conn._disconnect_on_finish = True


class _Tracked(tornado.httputil.HTTPMessageDelegate):
    """The request's delegate, telling the server when the connection turns busy and idle again."""

    def __init__(self, delegate, server: GuardedHTTPServer, server_conn, request_conn):
        self.delegate = delegate
        self.server = server
        self.server_conn = server_conn
        self.request_conn = request_conn
        self.delivered = False  # the application has seen this request's headers

    def headers_received(self, start_line, headers):
        if self._closed():
            return None
        self.delivered = True
        self.server._begin(self.server_conn, self.request_conn)
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk):
        return self.delegate.data_received(chunk) if self.delivered and not self._closed() else None

    def finish(self) -> None:
        if self.delivered and not self._closed():
            self.delegate.finish()
        elif self.delivered:
            self.delegate.on_connection_close()

    def _closed(self) -> bool:
        # The drain closes an idle connection whose next request may already sit read in its buffer: such a
        # request must not run (a row committed whose answer can no longer be written), as if never sent.
        return self.server_conn.stream.closed()

    def on_connection_close(self) -> None:
        if self.delivered:
            self.delegate.on_connection_close()
