"""A counter on MongoDB through PyMongo's async client (Motor clients work too).

Run: ``MONGO_URL=mongodb://127.0.0.1:27017/ python examples/mongo_app.py``
(needs ``pip install "aiohttp-sessionkit[mongo]"``).
"""

from __future__ import annotations

import os

from aiohttp import web

from aiohttp_sessionkit import MongoStore, get_session, setup


async def counter(request: web.Request) -> web.Response:
    session = await get_session(request)
    session["visits"] = session.get("visits", 0) + 1
    return web.Response(text=f"visits: {session['visits']}")


def make_app(url: str) -> web.Application:
    app = web.Application()
    setup(app, MongoStore(url, database="myapp", collection="sessions"))
    app.router.add_get("/", counter)
    return app


if __name__ == "__main__":
    web.run_app(make_app(os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017/")), port=8080)
