"""Sessions as signed JWTs that other services verify with the public key from the JWKS route.

Run: ``python examples/jwt_app.py``, then::

    curl -s -X POST localhost:8080/login -d '{"user": "ada", "password": "lovelace"}'
    curl -s localhost:8080/me -H "Authorization: Bearer <token>"
    curl -s localhost:8080/.well-known/jwks.json
    curl -s -X POST localhost:8080/logout -H "Authorization: Bearer <token>"

The signing key is generated at start-up (tokens die with the process); a real deployment
loads a PEM key from its secret store. ``REDIS_URL`` puts the deny list on Redis so that a
logout holds in every process; without it the deny list lives in this process's memory.
Needs ``pip install "aiohttp-sessionkit[jwt]"`` (and ``[redis]`` for ``REDIS_URL``).
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aiohttp_sessionkit import (
    HeaderTransport,
    JWTStore,
    MemoryStore,
    ServerStore,
    get_session,
    jwks_handler,
    new_session,
    save_session,
    setup,
)

ISSUER = "https://auth.example"
AUDIENCE = "api"
#: A stand-in for a user database: name -> (password, roles).
USERS = {"ada": ("lovelace", ["admin"]), "grace": ("hopper", ["reader"])}


async def login(request: web.Request) -> web.Response:
    try:
        body: Any = await request.json()
        user, password = str(body["user"]), str(body["password"])
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text='send {"user": ..., "password": ...}') from None
    expected, roles = USERS.get(user, ("", []))
    if not (expected and hmac.compare_digest(password.encode(), expected.encode())):
        raise web.HTTPUnauthorized(text="wrong user or password")
    session = await new_session(request)  # a new session lineage at login
    session["sub"] = user  # claims any JWT library can read
    session["roles"] = roles
    token = await save_session(request)  # the signed JWT the client presents
    return web.json_response({"token": token})


async def me(request: web.Request) -> web.Response:
    session = await get_session(request)
    if "sub" not in session:
        raise web.HTTPUnauthorized(text="log in first", headers={"WWW-Authenticate": "Bearer"})
    return web.json_response({"sub": session["sub"], "roles": session["roles"]})


async def logout(request: web.Request) -> web.Response:
    session = await get_session(request)
    session.invalidate()  # the token goes on the deny list until it would have expired
    return web.json_response({"logged_out": True})


def make_store(
    key: Ed25519PrivateKey | None = None, revocation: ServerStore | None = None
) -> JWTStore:
    """The issuing store: EdDSA, an issuer and an audience, a deny list for logout."""
    if revocation is None:
        redis_url = os.environ.get("REDIS_URL")
        if redis_url:
            from aiohttp_sessionkit import RedisStore

            revocation = RedisStore(redis_url, key_prefix="jwt-deny:")
        else:
            revocation = MemoryStore()
    return JWTStore(
        key or Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        issuer=ISSUER,
        audience=AUDIENCE,
        revocation=revocation,
    )


def make_app(store: JWTStore | None = None) -> web.Application:
    store = store or make_store()
    app = web.Application()
    # A short max_age: a token is re-issued on use, and a stolen one dies soon anyway.
    setup(app, store, transport=HeaderTransport(), max_age=900)
    app.router.add_post("/login", login)
    app.router.add_get("/me", me)
    app.router.add_post("/logout", logout)
    app.router.add_get("/.well-known/jwks.json", jwks_handler(store))
    return app


if __name__ == "__main__":
    web.run_app(
        make_app(),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8080")),
    )
