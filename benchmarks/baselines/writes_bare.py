"""The bare baseline for writes: Tornado and one INSERT … RETURNING through asyncpg or aiosqlite, nothing else.

    python benchmarks/baselines/writes_bare.py postgresql://…/db [--pool-min N] [--pool-max N] [--no-reset]
    python benchmarks/baselines/writes_bare.py sqlite:////path/app.db

POST / {"name": "..."} answers 201 with the new row as JSON (orjson), GET /health/ready 200. It listens on
a free port of 127.0.0.1 and says which; no access log.
"""

import argparse
import asyncio
import os
import signal

import aiosqlite
import asyncpg
import orjson
import tornado.httpserver
import tornado.netutil
import tornado.web

INSERT_POSTGRESQL = "INSERT INTO my_table (name) VALUES ($1) RETURNING id, name, created_at"
INSERT_SQLITE = "INSERT INTO my_table (name) VALUES (?) RETURNING id, name, created_at"
COLUMNS = ("id", "name", "created_at")
NAME_MAX_LENGTH = 50


def parse_name(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise tornado.web.HTTPError(400) from None
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX_LENGTH:
        raise tornado.web.HTTPError(400)
    return name


class RowsHandler(tornado.web.RequestHandler):
    def created(self, row: dict) -> None:
        self.set_status(201)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(row))


class AsyncpgRowsHandler(RowsHandler):
    def initialize(self, pool):
        self.pool = pool

    async def post(self):
        row = await self.pool.fetchrow(INSERT_POSTGRESQL, parse_name(self.request.body))
        self.created(dict(row))


class AiosqliteRowsHandler(RowsHandler):
    def initialize(self, connection):
        self.connection = connection

    async def post(self):
        # Autocommit: the statement is its own transaction, committed when its row has been read.
        rows = await self.connection.execute_fetchall(INSERT_SQLITE, (parse_name(self.request.body),))
        self.created(dict(zip(COLUMNS, rows[0], strict=True)))


class ReadyHandler(tornado.web.RequestHandler):
    def get(self):
        self.finish(b'{"status": "ready"}')


async def no_reset(connection):
    pass


async def open_database(args) -> tuple[type[RowsHandler], dict, object]:
    """The handler class, its arguments and the pool or connection to close at the end."""
    if args.url.startswith("sqlite"):
        # One connection: SQLite has one writer at a time, so a second connection would only wait for the lock.
        connection = await aiosqlite.connect(args.url.split(":///", 1)[1], isolation_level=None)
        return AiosqliteRowsHandler, {"connection": connection}, connection
    # By default asyncpg resets every connection it takes back (RESET ALL, UNLISTEN *, ...): a second round
    # trip per request. --no-reset skips it, as the project skips SQLAlchemy's rollback on return.
    pool = await asyncpg.create_pool(
        args.url, min_size=args.pool_min, max_size=args.pool_max, reset=no_reset if args.no_reset else None
    )
    return AsyncpgRowsHandler, {"pool": pool}, pool


async def serve(args, sockets) -> None:
    handler, handler_args, database = await open_database(args)
    app = tornado.web.Application(
        [(r"/", handler, handler_args), (r"/health/ready", ReadyHandler)],
        log_function=lambda handler: None,  # no access log
    )
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    print(f"[{os.getpid()} bare] ready", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    server.stop()
    await database.close()  # both wait for the statements under way


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="postgresql://… (asyncpg) or sqlite:///path (aiosqlite)")
    parser.add_argument("--pool-min", type=int, default=10)
    parser.add_argument("--pool-max", type=int, default=10)
    parser.add_argument("--no-reset", action="store_true", help="no reset query when a connection goes back")
    args = parser.parse_args()
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    print(f"listening on http://127.0.0.1:{sockets[0].getsockname()[1]}", flush=True)
    asyncio.run(serve(args, sockets))


if __name__ == "__main__":
    main()
