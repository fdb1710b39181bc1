"""A counter kept entirely in an encrypted cookie, with key rotation.

Run: ``SESSION_KEYS="$(python -m aiohttp_sessionkit keygen)" python examples/cookie_app.py``.
To rotate, prepend a new key: ``SESSION_KEYS="NEW,OLD"``; cookies sealed with OLD still open
and are re-sealed with NEW on their next write. Drop OLD once its cookies have expired.
"""

from __future__ import annotations

import os

from aiohttp import web

from aiohttp_sessionkit import EncryptedCookieStore, get_session, setup


async def counter(request: web.Request) -> web.Response:
    session = await get_session(request)
    session["visits"] = session.get("visits", 0) + 1
    return web.Response(text=f"visits: {session['visits']}")


def make_app(keys: list[str]) -> web.Application:
    app = web.Application()
    setup(app, EncryptedCookieStore(keys), max_age=7 * 24 * 3600)
    app.router.add_get("/", counter)
    return app


if __name__ == "__main__":
    # Never a fresh key as a fallback: each process (and each restart) would have its own,
    # and users would be logged out whenever a request reached another one.
    keys = [k for k in os.environ.get("SESSION_KEYS", "").split(",") if k]
    if not keys:
        raise SystemExit("set SESSION_KEYS to a key made by `python -m aiohttp_sessionkit keygen`")
    web.run_app(make_app(keys), port=8080)
