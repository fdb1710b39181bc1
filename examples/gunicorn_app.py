"""Several gunicorn workers, one set of sessions: every worker is given the same key.

Run from this directory, with the key made once and kept with your other secrets::

    export SESSION_KEY="$(python -m aiohttp_sessionkit keygen)"
    gunicorn gunicorn_app:app --worker-class aiohttp.GunicornWebWorker \\
        --workers 2 --preload --bind 127.0.0.1:8080

Reload http://127.0.0.1:8080/ a few times: ``worker`` changes, ``visits`` keeps counting.
"""

from __future__ import annotations

import os

from aiohttp import web

from aiohttp_sessionkit import EncryptedCookieStore, get_session, setup


async def counter(request: web.Request) -> web.Response:
    session = await get_session(request)
    session["visits"] = session.get("visits", 0) + 1
    return web.json_response({"visits": session["visits"], "worker": os.getpid()})


def make_app() -> web.Application:
    app = web.Application()
    # The key comes from the environment, never generated here as a fallback: each
    # worker (and each restart) would get a key of its own, and a user would be logged out
    # whenever a request reached another worker. Unset, the store refuses to start.
    store = EncryptedCookieStore(os.environ.get("SESSION_KEY", ""))
    # max_age: the cookie outlives the browser session (None would end it on browser close).
    setup(app, store, max_age=14 * 24 * 3600)
    app.router.add_get("/", counter)
    return app


# gunicorn imports this module once in the master (--preload) and serves ``app`` in every
# worker; stores open their connections on each worker's startup, after the fork.
app = make_app()
