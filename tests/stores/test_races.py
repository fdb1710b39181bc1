"""Logins and logouts racing slower requests of the same browser, on every store kind.

Each race is forced: the slow request loads its session and then waits on an event until
the other request has finished, so the interleaving is the same on every run. The client
keeps its token the way a browser's cookie jar does: each response's ``Set-Cookie`` is
applied in the order the responses arrive.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from aiohttp_sessionkit import AbstractStore, get_session, new_session, setup
from aiohttp_sessionkit.middleware import EndedLineages
from tests.conftest import FakeClock, StoreFactory
from tests.stores.test_contract import COOKIE_WIRE, client_for, login


class Race:
    """The events one slow request waits on: ``loaded`` once it holds its session, then it
    waits for ``release``."""

    def __init__(self) -> None:
        self.loaded = asyncio.Event()
        self.release = asyncio.Event()


RACE = web.AppKey("race", Race)


def race_app(store: AbstractStore) -> web.Application:
    # touch_interval=0: every read refreshes its session, so a slow read writes too.
    app = web.Application()
    setup(app, store, touch_interval=0)
    app[RACE] = Race()

    async def set_value(request: web.Request) -> web.Response:
        session = await get_session(request)
        session[request.match_info["key"]] = request.match_info["value"]
        return web.Response(text="set")

    async def slow(request: web.Request) -> web.Response:
        session = await get_session(request)
        race = request.app[RACE]
        race.loaded.set()
        await race.release.wait()
        if request.match_info["kind"] == "write":
            session["late"] = "write"
        return web.json_response(dict(session))

    async def login(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.regenerate()
        session["user"] = "alice"
        return web.Response(text="in")

    async def login_fresh(request: web.Request) -> web.Response:
        session = await new_session(request)
        session["user"] = "alice"
        return web.Response(text="in")

    async def logout(request: web.Request) -> web.Response:
        (await get_session(request)).invalidate()
        return web.Response(text="out")

    async def logout_flash(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.invalidate()
        session.flash("signed out")
        return web.Response(text="out")

    async def who(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response({"data": dict(session), "flashes": session.pop_flashes()})

    app.router.add_post("/set/{key}/{value}", set_value)
    app.router.add_post("/slow/{kind}", slow)
    app.router.add_post("/login", login)
    app.router.add_post("/login-fresh", login_fresh)
    app.router.add_post("/logout", logout)
    app.router.add_post("/logout-flash", logout_flash)
    app.router.add_get("/who", who)
    return app


#: What the racing request does, and what the browser must see afterwards.
OUTCOMES = {
    "/login": {"data": {"cart": "book", "user": "alice"}, "flashes": []},
    "/login-fresh": {"data": {"user": "alice"}, "flashes": []},
    "/logout": {"data": {}, "flashes": []},
    "/logout-flash": {"data": {}, "flashes": ["signed out"]},
}


@pytest.mark.parametrize("slow", ["read", "write"])
@pytest.mark.parametrize("racer", list(OUTCOMES))
async def test_a_slower_request_sends_no_cookie_after_a_login_or_logout_ended_its_session(
    aiohttp_client: Any, store_factory: StoreFactory, racer: str, slow: str
) -> None:
    app = race_app(store_factory())
    race = app[RACE]
    client = await client_for(aiohttp_client, app)
    old = await login(client, COOKIE_WIRE, cart="book")
    jar: str | None = old

    pending = asyncio.ensure_future(client.post(f"/slow/{slow}", headers=COOKIE_WIRE.present(jar)))
    await asyncio.wait_for(race.loaded.wait(), 10)
    response = await client.post(racer, headers=COOKIE_WIRE.present(jar))
    assert response.status == 200
    jar = COOKIE_WIRE.follow(response, jar)
    race.release.set()
    late = await pending

    assert late.status == 200
    assert await late.json() == {"cart": "book", **({"late": "write"} if slow == "write" else {})}
    # The session it loaded was ended while it ran: it sends no token header at all, neither
    # a new token nor a deletion that would wipe the one the racing request handed out.
    assert "Set-Cookie" not in late.headers
    response = await client.get("/who", headers=COOKIE_WIRE.present(jar))
    assert await response.json() == OUTCOMES[racer]
    if store_factory.revocable:
        response = await client.get("/who", headers=COOKIE_WIRE.present(old))
        assert await response.json() == {"data": {}, "flashes": []}


async def test_a_request_arriving_after_a_logout_with_the_old_token_gets_no_new_one(
    aiohttp_client: Any, store_factory: StoreFactory
) -> None:
    """A request the browser sent before it saw the logout's answer, arriving after it."""
    app = race_app(store_factory())
    client = await client_for(aiohttp_client, app)
    old = await login(client, COOKIE_WIRE, user="alice")
    response = await client.post("/logout", headers=COOKIE_WIRE.present(old))
    assert COOKIE_WIRE.cleared(response)
    for method, path in [("GET", "/who"), ("POST", "/set/user/mallory")]:
        response = await client.request(method, path, headers=COOKIE_WIRE.present(old))
        assert response.status == 200
        if store_factory.revocable:
            # The old token opens nothing: at most a brand-new session is started.
            assert COOKIE_WIRE.issued(response) != old
        else:
            # Its copy still opens in a client-side store without a deny list, but this
            # process never re-issues it, so the logout stays in the browser.
            assert "Set-Cookie" not in response.headers
    response = await client.get("/who", headers=COOKIE_WIRE.present(old))
    assert (await response.json())["data"].get("user") != "mallory"


# -- the in-process memory of ended sessions ---------------------------------------------------


def test_ended_sessions_are_forgotten_when_no_token_of_theirs_can_be_valid(
    clock: FakeClock,
) -> None:
    ended = EndedLineages(limit=100)
    ended.end("AIOHTTP_SESSION", "a1", clock.now + 60)
    ended.end("AIOHTTP_SESSION", "b2", clock.now)  # already past: not kept
    assert ended.holds("AIOHTTP_SESSION", "a1")
    assert not ended.holds("OTHER_NAME", "a1")  # keyed by the cookie name too
    assert not ended.holds("AIOHTTP_SESSION", "b2")
    clock.advance(60)
    assert not ended.holds("AIOHTTP_SESSION", "a1")
    assert ended.until == {}


def test_ended_sessions_are_bounded_and_expired_entries_go_first(clock: FakeClock) -> None:
    ended = EndedLineages(limit=16)
    for n in range(8):
        ended.end("s", f"short{n}", clock.now + 10)
    for n in range(8):
        ended.end("s", f"long{n}", clock.now + 1000)
    clock.advance(10)
    ended.end("s", "newest", clock.now + 1000)
    # The eight expired entries made room; every live one is still held.
    assert len(ended.until) == 9
    assert all(ended.holds("s", f"long{n}") for n in range(8))
    for n in range(100):
        ended.end("s", f"flood{n}", clock.now + 1000)
        assert len(ended.until) <= 16
    assert ended.holds("s", "flood99")
    assert not ended.holds("s", "long0")  # the oldest went when nothing had expired
    # Entries are hashes of the cookie name and lineage, never the ids themselves.
    assert all(isinstance(key, bytes) and len(key) == 16 for key in ended.until)
