"""A JSON API whose clients keep no cookies: the session token travels in a header.

Run: ``python examples/api_app.py``, then::

    curl -s -X POST localhost:8080/login -d '{"user": "ada", "password": "lovelace"}'
    curl -s localhost:8080/me -H "Authorization: Bearer <token>"
    curl -s -X POST localhost:8080/logout -H "Authorization: Bearer <token>"

``SESSIONKIT_STORE`` picks another store by URL (``redis://...``); the handlers do not change.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from aiohttp import web

from aiohttp_sessionkit import (
    HeaderTransport,
    get_session,
    new_session,
    save_session,
    setup,
)

#: A stand-in for a user database: name -> password. Compare secrets in constant time.
USERS = {"ada": "lovelace", "grace": "hopper"}


async def login(request: web.Request) -> web.Response:
    try:
        body: Any = await request.json()
        user, password = str(body["user"]), str(body["password"])
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text='send {"user": ..., "password": ...}') from None
    expected = USERS.get(user, "")
    if not (expected and hmac.compare_digest(password.encode(), expected.encode())):
        raise web.HTTPUnauthorized(text="wrong user or password")
    session = await new_session(request)  # a fresh id at login: no fixation
    session["user"] = user
    token = await save_session(request)  # written now; the token the client presents
    return web.json_response({"token": token, "user": user})


async def me(request: web.Request) -> web.Response:
    session = await get_session(request)
    user = session.get("user")
    if user is None:
        raise web.HTTPUnauthorized(text="log in first", headers={"WWW-Authenticate": "Bearer"})
    session["calls"] = session.get("calls", 0) + 1
    return web.json_response({"user": user, "calls": session["calls"]})


async def logout(request: web.Request) -> web.Response:
    session = await get_session(request)
    session.invalidate()  # the record is deleted; the response carries an empty Session-Token
    return web.json_response({"logged_out": True})


def make_app(store: str | None = None) -> web.Application:
    app = web.Application()
    setup(
        app,
        store or os.environ.get("SESSIONKIT_STORE", "memory://"),
        transport=HeaderTransport(),  # Authorization: Bearer <token>; new tokens in Session-Token
        max_age=3600,
    )
    app.router.add_post("/login", login)
    app.router.add_get("/me", me)
    app.router.add_post("/logout", logout)
    return app


if __name__ == "__main__":
    web.run_app(
        make_app(),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8080")),
    )
