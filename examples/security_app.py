"""aiohttp-security's "simple example" (one user, Jack, who may listen but not speak) on
aiohttp-sessionkit sessions.

Run: ``python examples/security_app.py`` (needs ``pip install "aiohttp-sessionkit[security]"``),
then open http://127.0.0.1:9000/.

What changes from the aiohttp-security demo: the session comes from aiohttp-sessionkit
(a MemoryStore here; any store works), and ``SessionIdentityPolicy`` from
``aiohttp_sessionkit.security``, which moves the session to a new id at login and deletes
it at logout. Login and logout are POST forms: a GET that changes who is logged in can be
triggered by any page with an ``<img>`` tag.
"""

from __future__ import annotations

from enum import Enum
from typing import NoReturn

from aiohttp import web
from aiohttp_security import (
    AbstractAuthorizationPolicy,
    check_permission,
    forget,
    is_anonymous,
    remember,
)
from aiohttp_security import setup as setup_security

from aiohttp_sessionkit import AbstractStore, MemoryStore, setup
from aiohttp_sessionkit.security import SessionIdentityPolicy

PAGE = """<!doctype html>
<html><body>
<p>Hello, I am Jack, and I am {state} logged in.</p>
<form method="post" action="/login"><button>Log me in</button></form>
<form method="post" action="/logout"><button>Log me out</button></form>
<p>Try my permissions logged in and logged out:
<a href="/listen">may I listen?</a> <a href="/speak">may I speak?</a></p>
</body></html>
"""


class JackOnly(AbstractAuthorizationPolicy):
    """One known user, ``jack``, with the single permission ``listen``."""

    async def authorized_userid(self, identity: str) -> str | None:
        return identity if identity == "jack" else None

    async def permits(
        self, identity: str | None, permission: str | Enum, context: object = None
    ) -> bool:
        return identity == "jack" and permission == "listen"


async def index(request: web.Request) -> web.Response:
    state = "NOT" if await is_anonymous(request) else "now"
    return web.Response(text=PAGE.format(state=state), content_type="text/html")


async def login(request: web.Request) -> NoReturn:
    # A real application checks a password here before remembering anyone.
    response = web.HTTPFound("/")
    await remember(request, response, "jack")  # new session id, identity stored
    raise response  # the session is saved even though the handler raises


async def logout(request: web.Request) -> NoReturn:
    response = web.HTTPFound("/")
    await forget(request, response)  # the whole session is invalidated
    raise response


async def listen(request: web.Request) -> web.Response:
    await check_permission(request, "listen")  # 401 when logged out
    return web.Response(text="I can listen!")


async def speak(request: web.Request) -> web.Response:
    await check_permission(request, "speak")  # 403: Jack may not speak
    return web.Response(text="I can speak!")


def make_app(store: AbstractStore | None = None) -> web.Application:
    app = web.Application()
    setup(app, store or MemoryStore())
    setup_security(app, SessionIdentityPolicy(), JackOnly())
    app.router.add_get("/", index)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/listen", listen)
    app.router.add_get("/speak", speak)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=9000)
