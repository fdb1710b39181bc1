"""A counter on Redis, several processes can share it.

Run: ``REDIS_URL=redis://127.0.0.1:6379/0 python examples/redis_app.py``
(needs ``pip install "aiohttp-sessionkit[redis]"``).
"""

from __future__ import annotations

import os

from aiohttp import web

from aiohttp_sessionkit import RedisStore, get_session, setup


async def counter(request: web.Request) -> web.Response:
    session = await get_session(request)
    session["visits"] = session.get("visits", 0) + 1
    return web.Response(text=f"visits: {session['visits']} (pid {os.getpid()})")


def make_app(url: str) -> web.Application:
    app = web.Application()
    # Built from a URL, the store owns its client: it is closed on app cleanup.
    setup(app, RedisStore(url, key_prefix="demo-session:"), idle_timeout=3600)
    app.router.add_get("/", counter)
    return app


if __name__ == "__main__":
    web.run_app(make_app(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")), port=8080)
