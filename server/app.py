"""The route table."""

import tornado.web
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.handlers import LiveHandler, NotFoundHandler, ReadyHandler, RowsHandler
from server.state import ServiceState


def make_app(session_factory: async_sessionmaker, state: ServiceState) -> tornado.web.Application:
    data = dict(state=state, session_factory=session_factory)
    return tornado.web.Application(
        [
            (r"/", RowsHandler, data),
            (r"/health/live", LiveHandler, dict(state=state)),
            (r"/health/ready", ReadyHandler, data),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=dict(state=state),
    )
