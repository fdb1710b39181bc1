"""A counter whose sessions live in a SQL table beside the application's own tables.

Run: ``python examples/sql_app.py`` (SQLite, the file ``sessions.db`` here), or
``DATABASE_URL=mysql+asyncmy://user:pw@127.0.0.1/app python examples/sql_app.py``
(needs ``pip install "aiohttp-sessionkit[sqlite]"`` or ``[mysql]``).

The application owns the engine and the ``MetaData``; the session table is defined on that
``MetaData``, so whatever creates the application's tables (here ``create_all``, in
production an Alembic migration) creates it too, and the store is told not to.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from aiohttp_sessionkit import SQLAlchemyStore, get_session, setup
from aiohttp_sessionkit.stores.sql import define_table

metadata = sa.MetaData()
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
)
sessions = define_table(metadata)  # "aiohttp_sessions", in the app's migrations


async def counter(request: web.Request) -> web.Response:
    session = await get_session(request)
    session["visits"] = session.get("visits", 0) + 1
    return web.Response(text=f"visits: {session['visits']}")


def make_app(url: str) -> web.Application:
    engine = create_async_engine(url)
    app = web.Application()

    async def database(app: web.Application) -> AsyncIterator[None]:
        await create_tables(engine)
        yield
        await engine.dispose()  # after the store's cleanup: the engine is the app's

    app.cleanup_ctx.append(database)
    # Borrowed engine: the store never disposes of it. The table exists by now.
    setup(app, SQLAlchemyStore(engine, create_table=False), purge_interval=600)
    app.router.add_get("/", counter)
    return app


async def create_tables(engine: AsyncEngine) -> None:
    """What `alembic upgrade head` does in production."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


if __name__ == "__main__":
    url = os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///sessions.db")
    web.run_app(make_app(url), port=8080)
