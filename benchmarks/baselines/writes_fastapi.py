"""The FastAPI peer for writes: FastAPI and SQLAlchemy's async session, served by uvicorn, one worker.

    python benchmarks/baselines/writes_fastapi.py postgresql+asyncpg://…/db [--pool-size N] [--max-overflow N]
    python benchmarks/baselines/writes_fastapi.py sqlite+aiosqlite:////path/app.db

Written as the FastAPI documentation teaches: a pydantic model for the body, a session per request from a
dependency, an ORM object added and committed, a response model. It listens on a free port of 127.0.0.1
and says which; no access log, as the other sides.
"""

import argparse
import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import DateTime, String, func
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAME_MAX_LENGTH = 50


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "my_table"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class NewRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=NAME_MAX_LENGTH)


class RowOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    created_at: datetime


def make_app(url: str, pool_size: int, max_overflow: int) -> FastAPI:
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow)
    # Without expiry on commit the row keeps the id and created_at that INSERT … RETURNING brought back.
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def get_session() -> AsyncIterator[AsyncSession]:
        async with sessions() as session:
            yield session

    app = FastAPI()

    @app.post("/", status_code=201, response_model=RowOut)
    async def create_row(new: NewRow, session: Annotated[AsyncSession, Depends(get_session)]) -> Row:
        row = Row(name=new.name)
        session.add(row)
        await session.commit()
        return row

    @app.get("/health/ready")
    async def ready() -> dict:
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="postgresql+asyncpg://… or sqlite+aiosqlite:///path")
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--max-overflow", type=int, default=0)
    args = parser.parse_args()
    # IPPROTO_TCP said outright: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # Nagle's algorithm and delayed ACKs hold each response back by tens of milliseconds.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    # The asyncio event loop, as every other side runs on; uvicorn's HTTP parser is its default ("auto").
    config = uvicorn.Config(
        make_app(args.url, args.pool_size, args.max_overflow), loop="asyncio", access_log=False, log_level="warning"
    )
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
