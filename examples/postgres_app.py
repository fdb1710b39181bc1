"""A counter on PostgreSQL, with expired rows purged in the background every 10 minutes.

Run: ``DATABASE_URL=postgresql://user@127.0.0.1/app python examples/postgres_app.py``
(needs ``pip install "aiohttp-sessionkit[postgres]"``). The table ``aiohttp_sessions`` is
created on startup if missing.
"""

from __future__ import annotations

import os

from aiohttp import web

from aiohttp_sessionkit import PostgresStore, get_session, setup


async def counter(request: web.Request) -> web.Response:
    session = await get_session(request)
    session["visits"] = session.get("visits", 0) + 1
    return web.Response(text=f"visits: {session['visits']}")


def make_app(dsn: str) -> web.Application:
    app = web.Application()
    setup(app, PostgresStore(dsn), purge_interval=600)
    app.router.add_get("/", counter)
    return app


if __name__ == "__main__":
    dsn = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    web.run_app(make_app(dsn), port=8080)
