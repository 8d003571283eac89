"""The bare baseline: create_async_engine, connect once, listen on port 0, answer 200 on /ready."""

import asyncio
import signal
import sys

import tornado.httpserver
import tornado.netutil
import tornado.web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


class ReadyHandler(tornado.web.RequestHandler):
    def get(self):
        self.write({"status": "ready"})


async def main(url):
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/(?:health/)?ready", ReadyHandler)]))
    server.add_sockets(sockets)
    print(f"listening on http://127.0.0.1:{sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    server.stop()
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
