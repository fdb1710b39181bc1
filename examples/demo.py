"""A small login demo: a form, logout, a visit counter, flash messages, and the raw session.

Run: ``python examples/demo.py`` (MemoryStore), or pick another store with a URL:
``SESSIONKIT_STORE=redis://127.0.0.1:6379/0 python examples/demo.py``; the value
``cookie`` selects the encrypted-cookie store with a key from ``SESSIONKIT_KEY`` (a fresh
one if unset).
"""

from __future__ import annotations

import html
import json
import os
import secrets

from aiohttp import web

from aiohttp_sessionkit import (
    AbstractStore,
    EncryptedCookieStore,
    generate_key,
    get_session,
    new_session,
    setup,
    store_from_url,
)

routes = web.RouteTableDef()

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>aiohttp-sessionkit demo</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">
<h1>aiohttp-sessionkit demo</h1>
{flashes}
{body}
<p><a href="/">home</a> · <a href="/counter">counter</a> · <a href="/session">session</a></p>
</body></html>"""


def page(body: str, flashes: list[str]) -> web.Response:
    items = "".join(f"<li>{html.escape(str(f))}</li>" for f in flashes)
    return web.Response(
        text=PAGE.format(body=body, flashes=f"<ul>{items}</ul>" if items else ""),
        content_type="text/html",
    )


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{html.escape(token)}">'


async def checked_form(request: web.Request) -> dict[str, str]:
    """The posted form, after checking its CSRF token against the session's."""
    form = await request.post()
    session = await get_session(request)
    expected = session.get("csrf")
    given = form.get("csrf")
    if not isinstance(expected, str) or not isinstance(given, str):
        raise web.HTTPForbidden(text="missing CSRF token")
    if not secrets.compare_digest(expected, given):
        raise web.HTTPForbidden(text="bad CSRF token")
    return {k: v for k, v in form.items() if isinstance(v, str)}


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    session = await get_session(request)
    token = session.setdefault("csrf", secrets.token_urlsafe(16))
    user = session.get("user")
    if user:
        body = (
            f"<p>Signed in as <b>{html.escape(user)}</b>.</p>"
            f'<form method="post" action="/logout">{csrf_field(token)}'
            "<button>Sign out</button></form>"
        )
    else:
        body = (
            f'<form method="post" action="/login">{csrf_field(token)}'
            '<label>Name <input name="user" required maxlength="40"></label> '
            "<button>Sign in</button></form>"
        )
    return page(body, session.pop_flashes())


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    form = await checked_form(request)
    user = form.get("user", "").strip()[:40]
    if not user:
        raise web.HTTPFound("/")
    # A new id at login: an id planted before login is worthless after it.
    session = await new_session(request)
    session["user"] = user
    session["csrf"] = secrets.token_urlsafe(16)
    session.flash(f"Welcome, {user}!")
    raise web.HTTPFound("/")


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    await checked_form(request)
    session = await get_session(request)
    session.invalidate()
    session.flash("You have been signed out.")
    raise web.HTTPFound("/")


@routes.get("/counter")
async def counter(request: web.Request) -> web.Response:
    session = await get_session(request)
    session["visits"] = session.get("visits", 0) + 1
    return page(f"<p>You have opened this page {session['visits']} times.</p>", [])


@routes.get("/session")
async def show(request: web.Request) -> web.Response:
    session = await get_session(request)
    details = {
        "data": dict(session),
        "new": session.new,
        "created": session.created,
        "last_access": session.last_access,
        "max_age": session.max_age,
    }
    text = html.escape(json.dumps(details, indent=2))
    return page(f"<pre>{text}</pre>", [])


def store_from_env() -> AbstractStore:
    choice = os.environ.get("SESSIONKIT_STORE", "memory://")
    if choice == "cookie":
        return EncryptedCookieStore(os.environ.get("SESSIONKIT_KEY") or generate_key())
    return store_from_url(choice)


def make_app() -> web.Application:
    app = web.Application()
    setup(app, store_from_env())
    app.add_routes(routes)
    return app


if __name__ == "__main__":
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    print(
        f"aiohttp-sessionkit demo on http://{host}:{port}/ (store: "
        f"{os.environ.get('SESSIONKIT_STORE', 'memory://')})",
        flush=True,
    )
    web.run_app(make_app(), host=host, port=port, print=None)
