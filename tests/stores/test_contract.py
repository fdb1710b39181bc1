"""The behaviour every store must show through the middleware, run once per store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import ClientPayloadError, DummyCookieJar, WSMsgType, web

from aiohttp_sessionkit import (
    AbstractStore,
    SerializationError,
    get_session,
    new_session,
    save_session,
    setup,
)
from tests.conftest import (
    CountingStore,
    FakeClock,
    StoreFactory,
    Wire,
    raw_set_cookies,
    set_cookies,
)

COOKIE = "AIOHTTP_SESSION"


def build_app(store: AbstractStore, wire: Wire, **options: Any) -> web.Application:
    """An app with one route per behaviour under test, on the wire's transport."""
    app = web.Application()
    setup(app, store, **wire.options, **options)
    routes = web.RouteTableDef()

    @routes.get("/untouched")
    async def untouched(request: web.Request) -> web.Response:
        return web.Response(text="plain")

    @routes.get("/read")
    async def read(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response({"data": dict(session), "new": session.new})

    @routes.post("/incr")
    async def incr(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["n"] = session.get("n", 0) + 1
        return web.json_response(session["n"])

    @routes.post("/set/{key}/{value}")
    async def set_value(request: web.Request) -> web.Response:
        session = await get_session(request)
        session[request.match_info["key"]] = request.match_info["value"]
        return web.Response(text="set")

    @routes.post("/login-redirect")
    async def login_redirect(request: web.Request) -> web.Response:
        session = await new_session(request)
        session["user"] = "alice"
        raise web.HTTPFound("/read")

    @routes.post("/fail-500")
    async def fail_500(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["doomed"] = True
        return web.Response(status=500, text="failed")

    @routes.post("/raise")
    async def raise_error(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["doomed"] = True
        raise RuntimeError("handler bug")

    @routes.post("/not-json")
    async def not_json(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["fine"] = 1
        session["bad"] = object()
        return web.Response(text="unreachable")

    @routes.post("/int-keys")
    async def int_keys(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["cart"] = {1: "one", "1": "the string one"}  # JSON would keep only one
        return web.Response(text="unreachable")

    @routes.get("/stream")
    async def stream(request: web.Request) -> web.StreamResponse:
        session = await get_session(request)
        session["streamed"] = "yes"
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"chunk")
        return response

    @routes.get("/stream-late-change")
    async def stream_late_change(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        session = await get_session(request)
        session["late"] = "yes"
        await response.write(b"chunk")
        return response

    @routes.get("/ws")
    async def websocket(request: web.Request) -> web.WebSocketResponse:
        session = await get_session(request)
        session["ws"] = "connected"
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                session["last"] = message.data
                await ws.send_str(f"echo {message.data}")
        return ws

    @routes.post("/logout")
    async def logout(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.invalidate()
        return web.Response(text="bye")

    @routes.post("/logout-then-flash")
    async def logout_then_flash(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.invalidate()
        session.flash("logged out")
        return web.Response(text="bye")

    @routes.post("/regenerate")
    async def regenerate(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.regenerate()
        return web.Response(text="regenerated")

    @routes.post("/new")
    async def fresh(request: web.Request) -> web.Response:
        await new_session(request)
        return web.Response(text="fresh")

    @routes.post("/flash/{text}")
    async def flash(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.flash(request.match_info["text"])
        return web.Response(text="flashed")

    @routes.get("/flashes")
    async def flashes(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response(session.pop_flashes())

    @routes.get("/gather")
    async def gather(request: web.Request) -> web.Response:
        first, second = await asyncio.gather(get_session(request), get_session(request))
        first["a"] = 1
        second["b"] = 2
        return web.json_response(first is second)

    @routes.post("/remember")
    async def remember(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.max_age = 1000
        session["remembered"] = True
        return web.Response(text="remembered")

    @routes.post("/clear")
    async def clear(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.clear()
        return web.Response(text="cleared")

    @routes.post("/save-now")
    async def save_now(request: web.Request) -> web.Response:
        session = await new_session(request)
        session["user"] = "alice"
        token = await save_session(request)
        session["after"] = "saved on the way out"
        return web.json_response({"token": token})

    @routes.get("/save-unchanged")
    async def save_unchanged(request: web.Request) -> web.Response:
        return web.json_response({"token": await save_session(request)})

    app.add_routes(routes)
    return app


async def client_for(aiohttp_client: Any, app: web.Application) -> Any:
    # Tokens are passed by hand so each test controls exactly what the client presents.
    return await aiohttp_client(app, cookie_jar=DummyCookieJar())


#: The cookie transport, for test modules that speak cookies only.
COOKIE_WIRE = Wire("cookie")


def with_cookie(value: str | None) -> dict[str, str]:
    """Request headers presenting ``value`` as the session cookie."""
    return COOKIE_WIRE.present(value)


def cookie_value(response: Any) -> str:
    """The session cookie the response sets; fails the test if there is none."""
    return token_of(COOKIE_WIRE, response)


def token_of(wire: Wire, response: Any) -> str:
    """The new token the response hands out; fails the test if there is none."""
    token = wire.issued(response)
    assert token, f"no new token in the response ({wire.kind} transport)"
    return token


def sends_no_token(wire: Wire, response: Any) -> bool:
    """True when the response neither hands out a token nor clears one."""
    return wire.issued(response) is None and not wire.cleared(response)


async def login(client: Any, wire: Wire, **values: str) -> str:
    """Write values into a new session; return its token."""
    token: str | None = None
    for key, value in values.items():
        response = await client.post(f"/set/{key}/{value}", headers=wire.present(token))
        assert response.status == 200
        token = wire.follow(response, token)
    assert token is not None
    return token


async def read(client: Any, wire: Wire, token: str | None) -> dict[str, Any]:
    response = await client.get("/read", headers=wire.present(token))
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def read_following(client: Any, wire: Wire, token: str) -> tuple[dict[str, Any], str]:
    """Read the session; return the body and the token to use next (refreshes may reissue)."""
    response = await client.get("/read", headers=wire.present(token))
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body, wire.issued(response) or token


# -- lazy load, lazy save ---------------------------------------------------------------------


async def test_untouched_session_costs_no_store_call_and_no_cookie(
    aiohttp_client: Any, wire: Wire, store: AbstractStore
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting, wire))
    cookie = await login(client, wire, user="alice")
    before = counting.calls
    response = await client.get("/untouched", headers=wire.present(cookie))
    assert response.status == 200
    assert await response.text() == "plain"
    assert counting.calls == before
    assert sends_no_token(wire, response)
    assert "Vary" not in response.headers


async def test_read_only_request_loads_once_and_writes_nothing(
    aiohttp_client: Any, wire: Wire, store: AbstractStore
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting, wire))
    cookie = await login(client, wire, user="alice")
    loads, saves, deletes = counting.loads, counting.saves, counting.deletes
    response = await client.get("/read", headers=wire.present(cookie))
    assert (await response.json())["data"] == {"user": "alice"}
    assert (counting.loads - loads, counting.saves - saves, counting.deletes - deletes) == (1, 0, 0)
    assert sends_no_token(wire, response)


async def test_change_is_written_exactly_once(
    aiohttp_client: Any, wire: Wire, store: AbstractStore
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting, wire))
    response = await client.post("/incr")
    assert await response.json() == 1
    assert (counting.loads, counting.saves) == (0, 1)  # no cookie yet: nothing to load
    cookie = token_of(wire, response)
    response = await client.post("/incr", headers=wire.present(cookie))
    assert await response.json() == 2
    assert (counting.loads, counting.saves) == (1, 2)


async def test_counter_survives_across_requests(
    aiohttp_client: Any, wire: Wire, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store, wire))
    cookie: str | None = None
    for expected in range(1, 6):
        response = await client.post("/incr", headers=wire.present(cookie))
        assert await response.json() == expected
        cookie = wire.follow(response, cookie)
    assert (await read(client, wire, cookie))["data"] == {"n": 5}


async def test_concurrent_get_session_calls_share_one_load(
    aiohttp_client: Any, wire: Wire, store: AbstractStore
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting, wire))
    cookie = await login(client, wire, user="alice")
    loads = counting.loads
    response = await client.get("/gather", headers=wire.present(cookie))
    assert await response.json() is True
    assert counting.loads - loads == 1
    new_cookie = wire.issued(response) or cookie
    assert (await read(client, wire, new_cookie))["data"] == {"user": "alice", "a": 1, "b": 2}


# -- responses -------------------------------------------------------------------------------


async def test_redirect_after_login_still_saves_and_carries_the_cookie(
    aiohttp_client: Any, wire: Wire, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store, wire))
    response = await client.post("/login-redirect", allow_redirects=False)
    assert response.status == 302
    assert (await read(client, wire, token_of(wire, response)))["data"] == {"user": "alice"}


@pytest.mark.parametrize("route", ["/fail-500", "/raise"])
async def test_failed_request_saves_nothing(
    aiohttp_client: Any, wire: Wire, store: AbstractStore, route: str
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting, wire))
    cookie = await login(client, wire, user="alice")
    saves = counting.saves
    response = await client.post(route, headers=wire.present(cookie))
    assert response.status == 500
    assert sends_no_token(wire, response)
    assert counting.saves == saves
    assert (await read(client, wire, cookie))["data"] == {"user": "alice"}


async def test_value_that_is_not_json_names_the_key_and_writes_nothing(
    aiohttp_client: Any, wire: Wire, store: AbstractStore, caplog: pytest.LogCaptureFixture
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting, wire))
    response = await client.post("/not-json")
    assert response.status == 500
    assert sends_no_token(wire, response)
    assert counting.saves == 0
    errors = [r for r in caplog.records if r.exc_info and r.exc_info[0] is SerializationError]
    assert errors, "the serialization error was not logged"
    assert "session['bad']" in str(errors[0].exc_info[1])  # type: ignore[index]


async def test_a_non_str_key_is_refused_naming_its_path_and_writes_nothing(
    aiohttp_client: Any, store: AbstractStore, caplog: pytest.LogCaptureFixture
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting, COOKIE_WIRE))
    cookie = await login(client, COOKIE_WIRE, user="alice")
    saves = counting.saves
    response = await client.post("/int-keys", headers=COOKIE_WIRE.present(cookie))
    assert response.status == 500
    assert sends_no_token(COOKIE_WIRE, response)
    assert counting.saves == saves
    errors = [r for r in caplog.records if r.exc_info and r.exc_info[0] is not None]
    assert any(
        str(r.exc_info[1]).startswith("session['cart'][1]: keys must be str")  # type: ignore[index]
        for r in errors
    )
    assert (await read(client, COOKIE_WIRE, cookie))["data"] == {"user": "alice"}


async def test_stream_response_prepared_in_handler_saves_at_prepare(
    aiohttp_client: Any, wire: Wire, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store, wire))
    response = await client.get("/stream")
    assert response.status == 200
    assert await response.read() == b"chunk"
    assert response.headers["Vary"] == wire.vary
    assert (await read(client, wire, token_of(wire, response)))["data"] == {"streamed": "yes"}


async def test_change_after_prepare_that_needs_a_new_cookie_fails_loudly(
    aiohttp_client: Any, wire: Wire, store: AbstractStore, caplog: pytest.LogCaptureFixture
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting, wire))
    response = await client.get("/stream-late-change")
    assert response.status == 200  # headers were already sent...
    with pytest.raises(ClientPayloadError):
        await response.read()  # ...and the stream is cut rather than finished as if saved
    assert sends_no_token(wire, response)
    assert counting.saves == 0
    assert any(
        "changed after the response was prepared" in r.getMessage()
        or (r.exc_info and "changed after the response was prepared" in str(r.exc_info[1]))
        for r in caplog.records
    )


async def test_websocket_session_change_before_prepare_reaches_client(
    aiohttp_client: Any, wire: Wire, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store, wire))
    async with client.ws_connect("/ws") as ws:
        cookie = token_of(wire, ws._response)
        await ws.send_str("hello")
        assert await ws.receive_str() == "echo hello"
    data = (await read(client, wire, cookie))["data"]
    assert data["ws"] == "connected"


async def test_any_session_access_adds_vary_cookie(
    aiohttp_client: Any, wire: Wire, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store, wire))
    response = await client.get("/read")
    assert response.headers["Vary"] == wire.vary
    response = await client.post("/incr")
    assert response.headers["Vary"] == wire.vary


async def test_default_cookie_attributes_are_secure(
    aiohttp_client: Any, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store, Wire("cookie")))
    response = await client.post("/incr")
    [header] = raw_set_cookies(response)
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert attributes == {"path", "httponly", "samesite"}
    assert "; Path=/" in header and "; SameSite=Lax" in header
    assert "Domain" not in header and "Secure" not in header  # plain http: auto Secure is off


# -- logout, regeneration, fixation -----------------------------------------------------------


async def test_invalidate_deletes_the_session_for_the_old_cookie(
    aiohttp_client: Any, wire: Wire, store_factory: StoreFactory
) -> None:
    client = await client_for(aiohttp_client, build_app(store_factory(), wire))
    cookie = await login(client, wire, user="alice")
    response = await client.post("/logout", headers=wire.present(cookie))
    assert wire.cleared(response)
    after = await read(client, wire, cookie)
    if not store_factory.revocable:
        # The cookie store (and a JWT store without a deny list) cannot revoke a copy of the
        # token; only the client's copy is dropped.
        assert after["data"] == {"user": "alice"}
    else:
        assert after == {"data": {}, "new": True}


async def test_logout_then_flash_starts_a_new_session(
    aiohttp_client: Any, wire: Wire, store_factory: StoreFactory
) -> None:
    client = await client_for(aiohttp_client, build_app(store_factory(), wire))
    cookie = await login(client, wire, user="alice")
    response = await client.post("/logout-then-flash", headers=wire.present(cookie))
    fresh = token_of(wire, response)
    assert fresh and fresh != cookie
    response = await client.get("/flashes", headers=wire.present(fresh))
    assert await response.json() == ["logged out"]
    if store_factory.revocable:
        assert (await read(client, wire, cookie))["new"] is True


async def test_regenerate_keeps_data_under_a_new_id(
    aiohttp_client: Any, wire: Wire, store_factory: StoreFactory
) -> None:
    client = await client_for(aiohttp_client, build_app(store_factory(), wire))
    cookie = await login(client, wire, user="alice")
    response = await client.post("/regenerate", headers=wire.present(cookie))
    fresh = token_of(wire, response)
    assert fresh != cookie
    assert (await read(client, wire, fresh))["data"] == {"user": "alice"}
    if store_factory.revocable:
        assert (await read(client, wire, cookie)) == {"data": {}, "new": True}


async def test_new_session_discards_the_old_record(
    aiohttp_client: Any, wire: Wire, store_factory: StoreFactory
) -> None:
    client = await client_for(aiohttp_client, build_app(store_factory(), wire))
    cookie = await login(client, wire, user="alice")
    response = await client.post("/new", headers=wire.present(cookie))
    assert wire.cleared(response)
    if store_factory.revocable:
        assert (await read(client, wire, cookie)) == {"data": {}, "new": True}


async def test_clearing_every_key_expires_the_cookie(
    aiohttp_client: Any, wire: Wire, store_factory: StoreFactory
) -> None:
    client = await client_for(aiohttp_client, build_app(store_factory(), wire))
    cookie = await login(client, wire, user="alice")
    response = await client.post("/clear", headers=wire.present(cookie))
    assert wire.cleared(response)
    if store_factory.revocable:
        assert (await read(client, wire, cookie))["new"] is True


@pytest.mark.parametrize("bad", ["garbage", "", "x" * 3000, "A" * 43, "../../etc/passwd"])
async def test_unusable_cookie_gives_a_fresh_session(
    aiohttp_client: Any, wire: Wire, store: AbstractStore, bad: str
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting, wire))
    body = await read(client, wire, bad)
    assert body == {"data": {}, "new": True}
    assert counting.saves == 0 and counting.deletes == 0
    response = await client.post("/incr", headers=wire.present(bad))
    assert token_of(wire, response) != bad


# -- flashes, max_age, expiry -----------------------------------------------------------------


async def test_flash_messages_persist_until_popped(
    aiohttp_client: Any, wire: Wire, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store, wire))
    response = await client.post("/flash/saved")
    cookie = token_of(wire, response)
    response = await client.post("/flash/again", headers=wire.present(cookie))
    after: str | None = wire.follow(response, cookie)
    response = await client.get("/flashes", headers=wire.present(after))
    assert await response.json() == ["saved", "again"]
    after = wire.follow(response, after)
    response = await client.get("/flashes", headers=wire.present(after))
    assert await response.json() == []


async def test_per_session_max_age_sets_the_cookie_and_persists(
    aiohttp_client: Any, wire: Wire, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store, wire, max_age=60))
    cookie = await login(client, wire, user="alice")
    response = await client.post("/remember", headers=wire.present(cookie))
    if wire.kind == "cookie":
        assert set_cookies(response)[COOKIE]["max-age"] == "1000"
        cookie = token_of(wire, response)
    else:  # a header token carries no lifetime: the client keeps it until told otherwise
        cookie = wire.follow(response, cookie) or ""
    response = await client.post("/incr", headers=wire.present(cookie))
    if wire.kind == "cookie":
        assert set_cookies(response)[COOKIE]["max-age"] == "1000"
    cookie = wire.follow(response, cookie) or ""
    assert (await read(client, wire, cookie))["data"] == {
        "user": "alice",
        "remembered": True,
        "n": 1,
    }


async def test_idle_session_expires(
    aiohttp_client: Any, wire: Wire, store: AbstractStore, clock: FakeClock
) -> None:
    client = await client_for(aiohttp_client, build_app(store, wire, idle_timeout=600))
    cookie = await login(client, wire, user="alice")
    clock.advance(599)
    body, cookie = await read_following(client, wire, cookie)  # refreshes the last access
    assert body["data"] == {"user": "alice"}
    clock.advance(599)
    body, cookie = await read_following(client, wire, cookie)
    assert body["data"] == {"user": "alice"}
    clock.advance(601)
    assert (await read(client, wire, cookie)) == {"data": {}, "new": True}


async def test_activity_extends_the_idle_timeout_but_not_the_absolute_one(
    aiohttp_client: Any, wire: Wire, store: AbstractStore, clock: FakeClock
) -> None:
    app = build_app(store, wire, idle_timeout=600, absolute_timeout=1500, touch_interval=60)
    client = await client_for(aiohttp_client, app)
    cookie = await login(client, wire, user="alice")
    for _ in range(3):  # t = 500, 1000, 1500 minus one: each read refreshes the idle clock
        clock.advance(499)
        body, cookie = await read_following(client, wire, cookie)
        assert body["data"] == {"user": "alice"}
    clock.advance(10)  # past the absolute lifetime, though active a moment ago
    assert (await read(client, wire, cookie)) == {"data": {}, "new": True}


async def test_reads_refresh_the_session_at_most_once_per_touch_interval(
    aiohttp_client: Any, wire: Wire, store: AbstractStore, clock: FakeClock
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting, wire, touch_interval=60))
    cookie = await login(client, wire, user="alice")
    saves = counting.saves
    for _ in range(5):
        clock.advance(10)
        await read(client, wire, cookie)
    assert counting.saves == saves
    clock.advance(20)
    response = await client.get("/read", headers=wire.present(cookie))
    assert counting.saves == saves + 1
    if not counting.client_side:
        assert sends_no_token(wire, response)  # same id, browser-session cookie


# -- several apps, one store ------------------------------------------------------------------


async def test_two_app_instances_on_one_store_share_sessions(
    aiohttp_client: Any, wire: Wire, store_factory: StoreFactory
) -> None:
    first = await client_for(aiohttp_client, build_app(store_factory(), wire))
    second = await client_for(aiohttp_client, build_app(store_factory(), wire))
    cookie = await login(first, wire, user="alice")
    assert (await read(second, wire, cookie))["data"] == {"user": "alice"}
    response = await second.post("/incr", headers=wire.present(cookie))
    cookie = wire.issued(response) or cookie
    assert (await read(first, wire, cookie))["data"] == {"user": "alice", "n": 1}
