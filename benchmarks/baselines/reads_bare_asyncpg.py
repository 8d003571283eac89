"""The bare baseline: Tornado, an asyncpg pool, one parameterised query, orjson; nothing else."""

import argparse
import asyncio
import os
import signal

import asyncpg
import orjson
import tornado.httpserver
import tornado.netutil
import tornado.process
import tornado.web

QUERY = "SELECT id, name, created_at FROM my_table WHERE id > $1 ORDER BY id LIMIT $2"


class RowsHandler(tornado.web.RequestHandler):
    def initialize(self, pool):
        self.pool = pool

    async def get(self):
        try:
            limit = int(self.get_query_argument("limit", "50"))
            after = int(self.get_query_argument("after", "0"))
        except ValueError:
            raise tornado.web.HTTPError(400) from None
        items = [dict(row) for row in await self.pool.fetch(QUERY, after, limit)]
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps({"items": items, "next": items[-1]["id"] if items else None}))


class ReadyHandler(tornado.web.RequestHandler):
    def get(self):
        self.finish(b'{"status": "ready"}')


async def no_reset(connection):
    pass


async def serve(args, sockets):
    # By default asyncpg resets every connection it takes back (RESET ALL, UNLISTEN *, ...): a second round
    # trip per request. --no-reset skips it, as the project skips SQLAlchemy's rollback on return.
    pool = await asyncpg.create_pool(
        args.dsn, min_size=args.pool_min, max_size=args.pool_max, reset=no_reset if args.no_reset else None
    )
    app = tornado.web.Application(
        [(r"/", RowsHandler, dict(pool=pool)), (r"/health/ready", ReadyHandler)],
        log_function=lambda handler: None,  # no access log, as in the project
    )
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    print(f"[{os.getpid()} bare] ready", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    server.stop()
    pool.terminate()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--pool-min", type=int, default=10)
    parser.add_argument("--pool-max", type=int, default=10)
    parser.add_argument("--no-reset", action="store_true", help="no reset query when a connection goes back")
    args = parser.parse_args()
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    print(f"listening on http://127.0.0.1:{sockets[0].getsockname()[1]}", flush=True)
    if args.processes > 1:
        # As the project does: bind, then fork; no event loop or pool exists before the fork.
        tornado.process.fork_processes(args.processes, max_restarts=0)
    asyncio.run(serve(args, sockets))


if __name__ == "__main__":
    main()
