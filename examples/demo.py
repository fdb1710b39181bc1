"""A small login demo: a form, logout, a visit counter, flash messages, the raw session, and
"Your sessions" (every device signed in as you, with "sign out" per device).

Run: ``python examples/demo.py`` (MemoryStore), or pick another store with a URL:
``SESSIONKIT_STORE=redis://127.0.0.1:6379/0 python examples/demo.py``; the value
``cookie`` selects the encrypted-cookie store with a key from ``SESSIONKIT_KEY`` (a fresh
one if unset). ``HOST`` (default 127.0.0.1) and ``PORT`` (default 8080; 0 picks a free
port) choose where it listens; the URL is printed once the port is bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import os
import re
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
    end_session,
    end_user_sessions,
    setup,
    store_from_url,
    user_sessions,
)
from aiohttp_sessionkit.masking import mask_credentials
from aiohttp_sessionkit.stores.url import SCHEMES

if __package__:  # imported as examples.demo (the tests)
    from examples import demo_panel
else:  # run as a script, as scripts/demo.sh does: its own folder is on sys.path
    import demo_panel  # type: ignore[import-not-found,no-redef]

# The library's get_session and new_session, timed for the page's session panel.
get_session = demo_panel.get_session
new_session = demo_panel.new_session

routes = web.RouteTableDef()

STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; color: #1f2328; background: #f6f8fa; margin: 0 }
header { background: #24292f; color: #fff; padding: .8em 1.5em; display: flex;
  align-items: baseline; gap: 2em; flex-wrap: wrap }
header h1 { font-size: 1.2em; margin: 0 }
header nav a { color: #d0d7de; margin-right: 1.2em; text-decoration: none }
header nav a:hover { color: #fff; text-decoration: underline }
main { max-width: 46em; margin: 1.5em auto; padding: 0 1em }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 1em 1.5em }
.flashes { list-style: none; padding: 0; margin: 0 0 1em }
.flashes li { background: #ddf4ff; border: 1px solid #54aeff; border-radius: 6px;
  padding: .5em 1em; margin-bottom: .5em }
input, button { font: inherit; padding: .3em .6em }
button { background: #1f883d; color: #fff; border: 0; border-radius: 6px; cursor: pointer }
pre { background: #f6f8fa; padding: .8em; border-radius: 6px; overflow-x: auto }
.panel { margin-top: 1.5em; background: #fff; border: 1px solid #d0d7de;
  border-left: 4px solid #8250df; border-radius: 8px; padding: .6em 1.5em 1em;
  font-size: .9em }
.panel h2 { font-size: 1em; margin: .4em 0 .6em; color: #8250df }
.panel table, .card table { border-collapse: collapse }
.panel th, .card th { text-align: left; padding: .15em 1.5em .15em 0; font-weight: 600;
  white-space: nowrap; vertical-align: top }
.panel .previous { color: #57606a; margin: .6em 0 0 }
"""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>aiohttp-sessionkit demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{style}</style></head>
<body>
<header><h1>aiohttp-sessionkit demo</h1>
<nav><a href="/">home</a><a href="/counter">counter</a><a href="/session">session</a></nav>
</header>
<main>
{flashes}
<section class="card">
{body}
</section>
{panel}
</main>
</body></html>"""


def page(body: str, flashes: list[str]) -> web.Response:
    items = "".join(f"<li>{html.escape(str(f))}</li>" for f in flashes)
    return web.Response(
        text=PAGE.format(
            style=STYLE,
            body=body,
            flashes=f'<ul class="flashes">{items}</ul>' if items else "",
            panel=demo_panel.MARK,  # filled in once the session is saved (demo_panel.py)
        ),
        content_type="text/html",
    )


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{html.escape(token)}">'


# CSRF without a session: a signed double-submit token (the OWASP CSRF cheat sheet). The
# browser holds a random value in a cookie of its own; every form carries an HMAC of that
# value and the signed-in user, which only this server can compute. An anonymous page view
# therefore stores nothing on the server: a flood of them cannot fill the session store.
CSRF_COOKIE = "demo_csrf"
CSRF_KEY = web.AppKey("csrf_key", bytes)
_NONCE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


def csrf_nonce(request: web.Request) -> str | None:
    """The browser's CSRF cookie, if it has the shape this server gives it."""
    nonce = request.cookies.get(CSRF_COOKIE)
    return nonce if nonce is not None and _NONCE.fullmatch(nonce) else None


def csrf_token(request: web.Request, nonce: str, session: Session) -> str:
    """The token forms carry: bound to the browser's cookie and to who is signed in, so a
    form from before a sign-in or sign-out no longer matches."""
    user = session.get("user")
    bound = f"{nonce}\x00{user if isinstance(user, str) else ''}".encode()
    return hmac.new(request.app[CSRF_KEY], bound, hashlib.sha256).hexdigest()


def set_nonce(request: web.Request, response: web.StreamResponse, nonce: str) -> None:
    """Give the browser its CSRF cookie (first visit, sign-in, sign-out)."""
    response.set_cookie(
        CSRF_COOKIE, nonce, httponly=True, samesite="Lax", path="/", secure=request.secure
    )


async def checked_form(request: web.Request) -> dict[str, str]:
    """The posted form, after checking its CSRF token against the cookie and the session.

    A form from before a sign-in or sign-out (a second tab, a double click) carries a token
    for the previous state. It is refused without touching the session, and the browser
    goes back home, where it sees its current state: answering with a page of our own could
    hand it a cookie that replaces the one the earlier click just set.
    """
    form = await request.post()
    nonce = csrf_nonce(request)
    given = form.get("csrf")
    if nonce is None or not isinstance(given, str):
        raise web.HTTPSeeOther("/?expired=1")
    expected = csrf_token(request, nonce, await get_session(request))
    if not secrets.compare_digest(expected, given):
        raise web.HTTPSeeOther("/?expired=1")
    return {k: v for k, v in form.items() if isinstance(v, str)}


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    session = await get_session(request)  # only read: a visitor without one gets none
    nonce = csrf_nonce(request)
    fresh = nonce is None
    if nonce is None:
        nonce = secrets.token_urlsafe(32)
    token = csrf_token(request, nonce, session)
    user = session.get("user")
    if user:
        body = (
            f"<p>Signed in as <b>{html.escape(user)}</b>.</p>"
            f'<form method="post" action="/logout">{csrf_field(token)}'
            "<button>Sign out</button></form>"
            '<p><a href="/devices">Your sessions</a></p>'
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
    response = page(body, flashes)
    if fresh:
        set_nonce(request, response, nonce)
    return response


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    form = await checked_form(request)
    user = form.get("user", "").strip()[:40]
    if not user:
        raise web.HTTPFound("/")
    # A new id at login: an id planted before login is worthless after it.
    session = await new_session(request)
    session["user"] = user
    session.flash(f"Welcome, {user}!")
    redirect = web.HTTPFound("/")
    set_nonce(request, redirect, secrets.token_urlsafe(32))  # forms from before sign-in stop
    raise redirect


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    await checked_form(request)
    session = await get_session(request)
    session.invalidate()
    session.flash("You have been signed out.")
    redirect = web.HTTPFound("/")
    set_nonce(request, redirect, secrets.token_urlsafe(32))
    raise redirect


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


# "Your sessions": the devices signed in as this user (setup(..., user_key="user")).
USERS = web.AppKey("users", bool)


@routes.get("/devices")
async def devices(request: web.Request) -> web.Response:
    session = await get_session(request)
    user = session.get("user")
    if not isinstance(user, str):
        raise web.HTTPFound("/")
    flashes = session.pop_flashes()
    if not request.app[USERS]:
        text = "This store cannot list a user's sessions: run the demo on a server-side store."
        return page(f"<p>{text}</p>", flashes)
    nonce = csrf_nonce(request)
    if nonce is None:  # the CSRF cookie came with the sign-in; without it, start over
        raise web.HTTPFound("/")
    field = csrf_field(csrf_token(request, nonce, session))
    rows = []
    for info in await user_sessions(request, user):
        device = html.escape(info.user_agent or "unknown browser")
        action = (
            "<b>this device</b>"
            if info.current
            else f'<form method="post" action="/devices/end">{field}'
            f'<input type="hidden" name="handle" value="{html.escape(info.handle)}">'
            "<button>Sign out</button></form>"
        )
        rows.append(
            f"<tr><td>{device}</td><td>{html.escape(info.remote or '')}</td>"
            f"<td>{when(info.last_seen.timestamp())}</td><td>{action}</td></tr>"
        )
    table = (
        "<table><tr><th>device</th><th>address</th><th>last activity</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
    )
    others = (
        f'<form method="post" action="/devices/end-others">{field}'
        "<button>Sign out everywhere else</button></form>"
    )
    return page(f"<h2>Your sessions</h2>{table}{others}", flashes)


@routes.post("/devices/end")
async def end_device(request: web.Request) -> web.Response:
    form = await checked_form(request)
    session = await get_session(request)
    # end_session given the request ends only a session of this request's own user: a
    # handle edited in the form (someone else's, or garbage) ends nothing.
    ended = await end_session(request, form.get("handle", ""))
    session.flash("That device is signed out." if ended else "That session had already ended.")
    raise web.HTTPFound("/devices")


@routes.post("/devices/end-others")
async def end_other_devices(request: web.Request) -> web.Response:
    await checked_form(request)
    session = await get_session(request)
    ended = await end_user_sessions(request, session["user"], keep_current=True)
    session.flash(f"Signed out everywhere else ({ended} other session{'s' * (ended != 1)}).")
    raise web.HTTPFound("/devices")


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
            f"SESSIONKIT_STORE={mask_credentials(choice)!r} names no store; use one of: {accepted} "
            "(URLs in full, e.g. redis://127.0.0.1:6379/0)"
        )
    try:
        return store_from_url(choice)
    except ConfigurationError as exc:
        raise SettingError(f"SESSIONKIT_STORE={mask_credentials(choice)!r}: {exc}") from None


def make_app() -> web.Application:
    """The demo application on the store SESSIONKIT_STORE names."""
    store = store_from_env()
    app = web.Application(middlewares=[demo_panel.middleware(type(store).__name__)])
    # Per process: a restart only makes the forms already on screen stale.
    app[CSRF_KEY] = secrets.token_bytes(32)
    # "Your sessions" where the store can list a user's sessions (server-side stores).
    app[USERS] = store.user_index
    if store.user_index:
        setup(app, store, listeners=[demo_panel.listener], user_key="user", record_client=True)
    else:
        setup(app, store, listeners=[demo_panel.listener])
    app.middlewares.append(demo_panel.inner)  # after the session middleware: innermost
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
        store = mask_credentials(os.environ.get("SESSIONKIT_STORE", "memory://"))
        print(
            f"aiohttp-sessionkit demo on http://{shown}:{bound_port}/ (store: "
            f"{store}); Ctrl+C stops it",
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
        print(f"demo: {mask_credentials(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
