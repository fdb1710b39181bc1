"""The demo's "what the session layer did" panel, built from lifecycle events.

Every page of the demo ends with a small table: was the session loaded (and how long the
store took), was it saved, was a new token issued, was it regenerated or ended and why.
The lifecycle events (``setup(..., listeners=[...])``) say what happened to the session;
two middlewares around the session middleware time the load and the commit. A redirect
(sign in, sign out) shows its panel on the page it leads to.
"""

from __future__ import annotations

import html
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from aiohttp import hdrs, web

import aiohttp_sessionkit
from aiohttp_sessionkit import Session, SessionEvent

#: Where a page puts the panel; the outer middleware fills it in once the session is saved.
MARK = "<!-- session-panel -->"
#: A redirect's panel, carried to the next page (text only: never a token).
LAST_COOKIE = "demo_last"
COOKIE_NAME = "AIOHTTP_SESSION"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Activity:
    """What the session layer did during one request."""

    events: list[SessionEvent] = field(default_factory=list)
    session: Session | None = None
    load_ms: float | None = None
    loaded_existing: bool = False
    accessed: int | None = None  # the session's last access when the handler finished
    dirty: bool = False
    handler_done: float | None = None
    commit_ms: float | None = None


ACTIVITY: ContextVar[Activity | None] = ContextVar("demo_activity", default=None)


def listener(event: SessionEvent) -> None:
    """``setup(..., listeners=[listener])``: file each event under the request it came from."""
    activity = ACTIVITY.get()
    if activity is not None:
        activity.events.append(event)


async def get_session(request: web.Request, name: str | None = None) -> Session:
    """:func:`aiohttp_sessionkit.get_session`, timed for the panel."""
    activity = ACTIVITY.get()
    first = activity is not None and activity.session is None
    start = time.perf_counter()
    session = await aiohttp_sessionkit.get_session(request, name)
    if activity is not None and first:
        activity.load_ms = (time.perf_counter() - start) * 1000
        activity.session = session
        activity.loaded_existing = not session.new
    return session


async def new_session(request: web.Request, name: str | None = None) -> Session:
    """:func:`aiohttp_sessionkit.new_session`, remembered for the panel."""
    session = await aiohttp_sessionkit.new_session(request, name)
    activity = ACTIVITY.get()
    if activity is not None:
        activity.session = session
    return session


@web.middleware
async def inner(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Innermost: notes when the handler finished, and the session's state then."""
    activity = ACTIVITY.get()
    try:
        return await handler(request)
    finally:
        if activity is not None:
            activity.handler_done = time.perf_counter()
            if activity.session is not None:
                activity.accessed = activity.session.last_access
                activity.dirty = activity.session.is_dirty


def _issued(headers: object) -> str:
    """What the response does with the session cookie: issue, clear, or nothing."""
    if not hasattr(headers, "getall"):
        return "no"
    for line in headers.getall(hdrs.SET_COOKIE, []):
        name, _, rest = line.partition("=")
        if name.strip() == COOKIE_NAME:
            value = rest.split(";", 1)[0].strip().strip('"')
            return "yes" if value else "cleared (the cookie is expired)"
    return "no"


def summary(activity: Activity, store: str, issued: str) -> list[tuple[str, str]]:
    """The panel's rows."""
    if activity.session is None:
        loaded = "no (this page does not use the session: no store call)"
    elif activity.load_ms is None:
        loaded = "no (replaced by new_session())"
    elif activity.loaded_existing:
        loaded = f"yes, an existing session ({activity.load_ms:.2f} ms)"
    else:
        loaded = f"no session to open: a new, empty one ({activity.load_ms:.2f} ms)"
    kinds = [e.kind for e in activity.events]
    session = activity.session
    refreshed = session is not None and session.last_access != activity.accessed
    if activity.dirty or activity.events or refreshed:
        took = "" if activity.commit_ms is None else f" ({activity.commit_ms:.2f} ms)"
        saved = ("yes" if activity.dirty or activity.events else "refreshed") + took
    else:
        saved = "no (nothing changed)"
    ended = [e.reason or "" for e in activity.events if e.kind == "ended"]
    return [
        ("store", store),
        ("loaded", loaded),
        ("saved", saved),
        ("new token issued", issued),
        ("created", "yes" if "created" in kinds else "no"),
        ("regenerated", "yes (a new id)" if "regenerated" in kinds else "no"),
        ("ended", ", ".join(ended) if ended else "no"),
    ]


def render(rows: list[tuple[str, str]], previous: str | None) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    before = ""
    if previous:
        before = f'<p class="previous">Before this page: {html.escape(previous)}</p>'
    return (
        '<aside class="panel"><h2>What the session layer did on this request</h2>'
        f"<table>{cells}</table>{before}</aside>"
    )


def middleware(store_name: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Outermost: collects the activity, fills the page's panel after the session is saved."""

    @web.middleware
    async def panel(request: web.Request, handler: Handler) -> web.StreamResponse:
        activity = Activity()
        token = ACTIVITY.set(activity)
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as redirect:
            _done(activity)
            issued = _issued(redirect.headers)
            # Only a redirect that changed the session says so: one that changed nothing
            # (a refused, stale form) sets no cookie at all (see demo.checked_form).
            if 300 <= redirect.status < 400 and (activity.events or issued != "no"):
                rows = summary(activity, store_name, issued)
                text = f"{request.method} {request.path}: " + "; ".join(
                    f"{k} {v}" for k, v in rows[1:] if not v.startswith("no")
                )
                redirect.set_cookie(LAST_COOKIE, quote(text[:300]), httponly=True, path="/")
            raise
        finally:
            ACTIVITY.reset(token)
        _done(activity)
        if isinstance(response, web.Response) and response.text and MARK in response.text:
            previous = request.cookies.get(LAST_COOKIE)
            rows = summary(activity, store_name, _issued(response.headers))
            shown = unquote(previous)[:300] if previous else None
            response.text = response.text.replace(MARK, render(rows, shown))
            if previous is not None:
                response.del_cookie(LAST_COOKIE, path="/")
        return response

    return panel


def _done(activity: Activity) -> None:
    if activity.handler_done is not None:
        activity.commit_ms = (time.perf_counter() - activity.handler_done) * 1000
