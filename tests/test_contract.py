"""The behaviour every store must show through the middleware, run once per store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import ClientPayloadError, DummyCookieJar, WSMsgType, web
from conftest import CountingStore, FakeClock, StoreFactory, raw_set_cookies, set_cookies

from aiohttp_sessionkit import (
    AbstractStore,
    SerializationError,
    get_session,
    new_session,
    setup,
)

COOKIE = "AIOHTTP_SESSION"


def build_app(store: AbstractStore, **options: Any) -> web.Application:
    """An app with one route per behaviour under test."""
    app = web.Application()
    setup(app, store, **options)
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

    app.add_routes(routes)
    return app


async def client_for(aiohttp_client: Any, app: web.Application) -> Any:
    # Cookies are passed by hand so each test controls exactly what the client presents.
    return await aiohttp_client(app, cookie_jar=DummyCookieJar())


def cookie_value(response: Any) -> str:
    morsel = set_cookies(response)[COOKIE]
    return str(morsel.value)


def with_cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


async def login(client: Any, **values: str) -> str:
    """Write values into a new session; return its cookie."""
    cookie: str | None = None
    for key, value in values.items():
        headers = with_cookie(cookie) if cookie else {}
        response = await client.post(f"/set/{key}/{value}", headers=headers)
        assert response.status == 200
        if COOKIE in set_cookies(response):
            cookie = cookie_value(response)
    assert cookie is not None
    return cookie


async def read(client: Any, cookie: str | None) -> dict[str, Any]:
    response = await client.get("/read", headers=with_cookie(cookie) if cookie else {})
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def read_following(client: Any, cookie: str) -> tuple[dict[str, Any], str]:
    """Read the session; return the body and the cookie to use next (refreshes may reissue)."""
    response = await client.get("/read", headers=with_cookie(cookie))
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    if COOKIE in set_cookies(response):
        cookie = cookie_value(response)
    return body, cookie


# -- lazy load, lazy save ---------------------------------------------------------------------


async def test_untouched_session_costs_no_store_call_and_no_cookie(
    aiohttp_client: Any, store: AbstractStore
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting))
    cookie = await login(client, user="alice")
    before = counting.calls
    response = await client.get("/untouched", headers=with_cookie(cookie))
    assert response.status == 200
    assert await response.text() == "plain"
    assert counting.calls == before
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers


async def test_read_only_request_loads_once_and_writes_nothing(
    aiohttp_client: Any, store: AbstractStore
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting))
    cookie = await login(client, user="alice")
    loads, saves, deletes = counting.loads, counting.saves, counting.deletes
    response = await client.get("/read", headers=with_cookie(cookie))
    assert (await response.json())["data"] == {"user": "alice"}
    assert (counting.loads - loads, counting.saves - saves, counting.deletes - deletes) == (1, 0, 0)
    assert "Set-Cookie" not in response.headers


async def test_change_is_written_exactly_once(aiohttp_client: Any, store: AbstractStore) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting))
    response = await client.post("/incr")
    assert await response.json() == 1
    assert (counting.loads, counting.saves) == (0, 1)  # no cookie yet: nothing to load
    cookie = cookie_value(response)
    response = await client.post("/incr", headers=with_cookie(cookie))
    assert await response.json() == 2
    assert (counting.loads, counting.saves) == (1, 2)


async def test_counter_survives_across_requests(aiohttp_client: Any, store: AbstractStore) -> None:
    client = await client_for(aiohttp_client, build_app(store))
    cookie: str | None = None
    for expected in range(1, 6):
        response = await client.post("/incr", headers=with_cookie(cookie) if cookie else {})
        assert await response.json() == expected
        if COOKIE in set_cookies(response):
            cookie = cookie_value(response)
    assert (await read(client, cookie))["data"] == {"n": 5}


async def test_concurrent_get_session_calls_share_one_load(
    aiohttp_client: Any, store: AbstractStore
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting))
    cookie = await login(client, user="alice")
    loads = counting.loads
    response = await client.get("/gather", headers=with_cookie(cookie))
    assert await response.json() is True
    assert counting.loads - loads == 1
    new_cookie = cookie_value(response) if COOKIE in set_cookies(response) else cookie
    assert (await read(client, new_cookie))["data"] == {"user": "alice", "a": 1, "b": 2}


# -- responses -------------------------------------------------------------------------------


async def test_redirect_after_login_still_saves_and_carries_the_cookie(
    aiohttp_client: Any, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store))
    response = await client.post("/login-redirect", allow_redirects=False)
    assert response.status == 302
    assert (await read(client, cookie_value(response)))["data"] == {"user": "alice"}


@pytest.mark.parametrize("route", ["/fail-500", "/raise"])
async def test_failed_request_saves_nothing(
    aiohttp_client: Any, store: AbstractStore, route: str
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting))
    cookie = await login(client, user="alice")
    saves = counting.saves
    response = await client.post(route, headers=with_cookie(cookie))
    assert response.status == 500
    assert "Set-Cookie" not in response.headers
    assert counting.saves == saves
    assert (await read(client, cookie))["data"] == {"user": "alice"}


async def test_value_that_is_not_json_names_the_key_and_writes_nothing(
    aiohttp_client: Any, store: AbstractStore, caplog: pytest.LogCaptureFixture
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting))
    response = await client.post("/not-json")
    assert response.status == 500
    assert "Set-Cookie" not in response.headers
    assert counting.saves == 0
    errors = [r for r in caplog.records if r.exc_info and r.exc_info[0] is SerializationError]
    assert errors, "the serialization error was not logged"
    assert "session['bad']" in str(errors[0].exc_info[1])  # type: ignore[index]


async def test_stream_response_prepared_in_handler_saves_at_prepare(
    aiohttp_client: Any, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store))
    response = await client.get("/stream")
    assert response.status == 200
    assert await response.read() == b"chunk"
    assert response.headers["Vary"] == "Cookie"
    assert (await read(client, cookie_value(response)))["data"] == {"streamed": "yes"}


async def test_change_after_prepare_that_needs_a_new_cookie_fails_loudly(
    aiohttp_client: Any, store: AbstractStore, caplog: pytest.LogCaptureFixture
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting))
    response = await client.get("/stream-late-change")
    assert response.status == 200  # headers were already sent...
    with pytest.raises(ClientPayloadError):
        await response.read()  # ...and the stream is cut rather than finished as if saved
    assert "Set-Cookie" not in response.headers
    assert counting.saves == 0
    assert any(
        "changed after the response was prepared" in r.getMessage()
        or (r.exc_info and "changed after the response was prepared" in str(r.exc_info[1]))
        for r in caplog.records
    )


async def test_websocket_session_change_before_prepare_reaches_client(
    aiohttp_client: Any, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store))
    async with client.ws_connect("/ws") as ws:
        cookie = ws._response.cookies[COOKIE].value
        await ws.send_str("hello")
        assert await ws.receive_str() == "echo hello"
    data = (await read(client, cookie))["data"]
    assert data["ws"] == "connected"


async def test_any_session_access_adds_vary_cookie(
    aiohttp_client: Any, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store))
    response = await client.get("/read")
    assert response.headers["Vary"] == "Cookie"
    response = await client.post("/incr")
    assert response.headers["Vary"] == "Cookie"


async def test_default_cookie_attributes_are_secure(
    aiohttp_client: Any, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store))
    response = await client.post("/incr")
    [header] = raw_set_cookies(response)
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert attributes == {"path", "httponly", "samesite"}
    assert "; Path=/" in header and "; SameSite=Lax" in header
    assert "Domain" not in header and "Secure" not in header  # plain http: auto Secure is off


# -- logout, regeneration, fixation -----------------------------------------------------------


async def test_invalidate_deletes_the_session_for_the_old_cookie(
    aiohttp_client: Any, store_factory: StoreFactory
) -> None:
    client = await client_for(aiohttp_client, build_app(store_factory()))
    cookie = await login(client, user="alice")
    response = await client.post("/logout", headers=with_cookie(cookie))
    morsel = set_cookies(response)[COOKIE]
    assert morsel["max-age"] == "0" and morsel.value == ""
    after = await read(client, cookie)
    if store_factory.client_side:
        # The cookie store cannot revoke a copy of the cookie; the browser's copy is deleted.
        assert after["data"] == {"user": "alice"}
    else:
        assert after == {"data": {}, "new": True}


async def test_logout_then_flash_starts_a_new_session(
    aiohttp_client: Any, store_factory: StoreFactory
) -> None:
    client = await client_for(aiohttp_client, build_app(store_factory()))
    cookie = await login(client, user="alice")
    response = await client.post("/logout-then-flash", headers=with_cookie(cookie))
    fresh = cookie_value(response)
    assert fresh and fresh != cookie
    response = await client.get("/flashes", headers=with_cookie(fresh))
    assert await response.json() == ["logged out"]
    if not store_factory.client_side:
        assert (await read(client, cookie))["new"] is True


async def test_regenerate_keeps_data_under_a_new_id(
    aiohttp_client: Any, store_factory: StoreFactory
) -> None:
    client = await client_for(aiohttp_client, build_app(store_factory()))
    cookie = await login(client, user="alice")
    response = await client.post("/regenerate", headers=with_cookie(cookie))
    fresh = cookie_value(response)
    assert fresh != cookie
    assert (await read(client, fresh))["data"] == {"user": "alice"}
    if not store_factory.client_side:
        assert (await read(client, cookie)) == {"data": {}, "new": True}


async def test_new_session_discards_the_old_record(
    aiohttp_client: Any, store_factory: StoreFactory
) -> None:
    client = await client_for(aiohttp_client, build_app(store_factory()))
    cookie = await login(client, user="alice")
    response = await client.post("/new", headers=with_cookie(cookie))
    assert set_cookies(response)[COOKIE]["max-age"] == "0"
    if not store_factory.client_side:
        assert (await read(client, cookie)) == {"data": {}, "new": True}


async def test_clearing_every_key_expires_the_cookie(
    aiohttp_client: Any, store_factory: StoreFactory
) -> None:
    client = await client_for(aiohttp_client, build_app(store_factory()))
    cookie = await login(client, user="alice")
    response = await client.post("/clear", headers=with_cookie(cookie))
    assert set_cookies(response)[COOKIE]["max-age"] == "0"
    if not store_factory.client_side:
        assert (await read(client, cookie))["new"] is True


@pytest.mark.parametrize("bad", ["garbage", "", "x" * 3000, "A" * 43, "../../etc/passwd"])
async def test_unusable_cookie_gives_a_fresh_session(
    aiohttp_client: Any, store: AbstractStore, bad: str
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting))
    body = await read(client, bad)
    assert body == {"data": {}, "new": True}
    assert counting.saves == 0 and counting.deletes == 0
    response = await client.post("/incr", headers=with_cookie(bad))
    assert cookie_value(response) != bad


# -- flashes, max_age, expiry -----------------------------------------------------------------


async def test_flash_messages_persist_until_popped(
    aiohttp_client: Any, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store))
    response = await client.post("/flash/saved")
    cookie = cookie_value(response)
    response = await client.post("/flash/again", headers=with_cookie(cookie))
    cookie = cookie_value(response) if COOKIE in set_cookies(response) else cookie
    response = await client.get("/flashes", headers=with_cookie(cookie))
    assert await response.json() == ["saved", "again"]
    cookie = cookie_value(response) if COOKIE in set_cookies(response) else cookie
    response = await client.get("/flashes", headers=with_cookie(cookie))
    assert await response.json() == []


async def test_per_session_max_age_sets_the_cookie_and_persists(
    aiohttp_client: Any, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store, max_age=60))
    cookie = await login(client, user="alice")
    response = await client.post("/remember", headers=with_cookie(cookie))
    assert set_cookies(response)[COOKIE]["max-age"] == "1000"
    cookie = cookie_value(response)
    response = await client.post("/incr", headers=with_cookie(cookie))
    assert set_cookies(response)[COOKIE]["max-age"] == "1000"


async def test_idle_session_expires(
    aiohttp_client: Any, store: AbstractStore, clock: FakeClock
) -> None:
    client = await client_for(aiohttp_client, build_app(store, idle_timeout=600))
    cookie = await login(client, user="alice")
    clock.advance(599)
    body, cookie = await read_following(client, cookie)  # refreshes the last access
    assert body["data"] == {"user": "alice"}
    clock.advance(599)
    body, cookie = await read_following(client, cookie)
    assert body["data"] == {"user": "alice"}
    clock.advance(601)
    assert (await read(client, cookie)) == {"data": {}, "new": True}


async def test_activity_extends_the_idle_timeout_but_not_the_absolute_one(
    aiohttp_client: Any, store: AbstractStore, clock: FakeClock
) -> None:
    app = build_app(store, idle_timeout=600, absolute_timeout=1500, touch_interval=60)
    client = await client_for(aiohttp_client, app)
    cookie = await login(client, user="alice")
    for _ in range(3):  # t = 500, 1000, 1500 minus one: each read refreshes the idle clock
        clock.advance(499)
        body, cookie = await read_following(client, cookie)
        assert body["data"] == {"user": "alice"}
    clock.advance(10)  # past the absolute lifetime, though active a moment ago
    assert (await read(client, cookie)) == {"data": {}, "new": True}


async def test_reads_refresh_the_session_at_most_once_per_touch_interval(
    aiohttp_client: Any, store: AbstractStore, clock: FakeClock
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting, touch_interval=60))
    cookie = await login(client, user="alice")
    saves = counting.saves
    for _ in range(5):
        clock.advance(10)
        await read(client, cookie)
    assert counting.saves == saves
    clock.advance(20)
    response = await client.get("/read", headers=with_cookie(cookie))
    assert counting.saves == saves + 1
    if not counting.client_side:
        assert "Set-Cookie" not in response.headers  # same id, browser-session cookie


# -- several apps, one store ------------------------------------------------------------------


async def test_two_app_instances_on_one_store_share_sessions(
    aiohttp_client: Any, store_factory: StoreFactory
) -> None:
    first = await client_for(aiohttp_client, build_app(store_factory()))
    second = await client_for(aiohttp_client, build_app(store_factory()))
    cookie = await login(first, user="alice")
    assert (await read(second, cookie))["data"] == {"user": "alice"}
    response = await second.post("/incr", headers=with_cookie(cookie))
    cookie = cookie_value(response) if COOKIE in set_cookies(response) else cookie
    assert (await read(first, cookie))["data"] == {"user": "alice", "n": 1}
