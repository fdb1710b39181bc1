"""A small login demo: a form, logout, a visit counter, flash messages, and the raw session.

Run: ``python examples/demo.py`` (MemoryStore), or pick another store with a URL:
``SESSIONKIT_STORE=redis://127.0.0.1:6379/0 python examples/demo.py``; the value
``cookie`` selects the encrypted-cookie store with a key from ``SESSIONKIT_KEY`` (a fresh
one if unset). ``HOST`` (default 127.0.0.1) and ``PORT`` (default 8080; 0 picks a free
port) choose where it listens; the URL is printed once the port is bound.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import secrets
import sys
import time
from urllib.parse import urlsplit

from aiohttp import web

from aiohttp_sessionkit import (
    AbstractStore,
    ConfigurationError,
    EncryptedCookieStore,
    Session,
    get_session,
    new_session,
    setup,
    store_from_url,
)
from aiohttp_sessionkit.stores.url import SCHEMES

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


def csrf_token(session: Session) -> str:
    """The session's CSRF token: made once per session, so every page and tab shares it."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(16)
    return token


async def checked_form(request: web.Request) -> dict[str, str]:
    """The posted form, after checking its CSRF token against the session's.

    A form from before a sign-in or sign-out (a second tab, a double click) carries the
    previous session's token. It is refused without touching the session, and the browser
    goes back home, where it sees its current state: answering with a page of our own could
    hand it a cookie that replaces the one the earlier click just set.
    """
    form = await request.post()
    session = await get_session(request)
    expected = session.get("csrf")
    given = form.get("csrf")
    if (
        not isinstance(expected, str)
        or not isinstance(given, str)
        or not secrets.compare_digest(expected, given)
    ):
        raise web.HTTPSeeOther("/?expired=1")
    return {k: v for k, v in form.items() if isinstance(v, str)}


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    session = await get_session(request)
    token = csrf_token(session)
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
    flashes = session.pop_flashes()
    if "expired" in request.query:
        flashes.append(EXPIRED)
    return page(body, flashes)


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    form = await checked_form(request)
    user = form.get("user", "").strip()[:40]
    if not user:
        raise web.HTTPFound("/")
    # A new id at login: an id planted before login is worthless after it.
    session = await new_session(request)
    session["user"] = user
    # The new session gets its own token: one known before sign-in must not work after it.
    csrf_token(session)
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
    visits = session.get("visits", 0) + 1
    session["visits"] = visits
    times = "1 time" if visits == 1 else f"{visits:,} times"
    return page(f"<p>You have opened this page {times}.</p>", [])


def when(epoch: float) -> str:
    """An epoch time as a UTC date a person reads at a glance."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


@routes.get("/session")
async def show(request: web.Request) -> web.Response:
    session = await get_session(request)
    rows = [
        ("new", "yes" if session.new else "no"),
        ("created", when(session.created)),
        ("last access", when(session.last_access)),
        (
            "max age",
            "until the browser closes" if session.max_age is None else f"{session.max_age} s",
        ),
    ]
    table = "".join(
        f"<tr><th style='text-align: left'>{name}</th><td>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    data = html.escape(json.dumps(dict(session), indent=2, sort_keys=True))
    return page(f"<table>{table}</table><p>Data:</p><pre>{data}</pre>", [])


EXPIRED = (
    "That form had expired (you signed in or out in another tab, or clicked twice): "
    "nothing was changed."
)


class SettingError(Exception):
    """A bad SESSIONKIT_STORE, HOST or PORT: reported as one line, without a traceback."""


def store_from_env() -> AbstractStore:
    """The store SESSIONKIT_STORE names: ``cookie`` or a store URL (default ``memory://``)."""
    choice = os.environ.get("SESSIONKIT_STORE", "memory://")
    if choice == "cookie":
        key = os.environ.get("SESSIONKIT_KEY")
        if not key:
            # No fresh key per process: a copy of this line in production would log every
            # user out on each restart and on each request that reaches another worker.
            raise SettingError(
                "SESSIONKIT_STORE=cookie needs SESSIONKIT_KEY: generate one with "
                "`python -m aiohttp_sessionkit keygen` (scripts/demo.sh does for a local run)"
            )
        return EncryptedCookieStore(key)
    scheme = urlsplit(choice).scheme.lower()
    if not scheme or f"{scheme}://" not in SCHEMES:
        accepted = ", ".join(("cookie", *SCHEMES))
        raise SettingError(
            f"SESSIONKIT_STORE={choice!r} names no store; use one of: {accepted} "
            "(URLs in full, e.g. redis://127.0.0.1:6379/0)"
        )
    try:
        return store_from_url(choice)
    except ConfigurationError as exc:
        raise SettingError(f"SESSIONKIT_STORE={choice!r}: {exc}") from None


def make_app() -> web.Application:
    """The demo application on the store SESSIONKIT_STORE names."""
    app = web.Application()
    setup(app, store_from_env())
    app.add_routes(routes)
    return app


async def serve(app: web.Application, host: str, port: int) -> None:
    """Listen, print the URL once the port is bound, and serve until interrupted."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise SettingError(
                f"cannot listen on {host}:{port} ({reason}); "
                "choose another port with PORT=8081 (or PORT=0 for any free one)"
            ) from None
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        print(
            f"aiohttp-sessionkit demo on http://{shown}:{bound_port}/ (store: "
            f"{os.environ.get('SESSIONKIT_STORE', 'memory://')}); Ctrl+C stops it",
            flush=True,
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> int:
    """Run the demo; bad settings end in one line on stderr and exit status 2."""
    host = os.environ.get("HOST", "127.0.0.1")
    try:
        try:
            port = int(os.environ.get("PORT", "8080"))
        except ValueError:
            raise SettingError(f"PORT={os.environ['PORT']!r} is not a port number") from None
        app = make_app()
        asyncio.run(serve(app, host, port))
    except SettingError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
