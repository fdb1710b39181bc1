"""Transports: the header transport, several transports at once, save_session(), caching.

The behaviour every store shows over every transport lives in test_contract.py (parametrized
by ``wire``); this module holds what is specific to carrying the token in a header, hostile
header input on every store, and the response headers that keep tokens out of caches.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from aiohttp import DummyCookieJar, web

from aiohttp_sessionkit import (
    AbstractStore,
    ConfigurationError,
    CookieTransport,
    EncryptedCookieStore,
    HeaderTransport,
    MemoryStore,
    generate_key,
    get_session,
    save_session,
    session_middleware,
    setup,
)
from tests.conftest import COOKIE, CountingStore, StoreFactory, Wire, set_cookies
from tests.stores.test_contract import build_app, client_for, login, read, token_of

HEADER = Wire("header")
FRESH = {"data": {}, "new": True}


# -- HeaderTransport settings -------------------------------------------------------------------


def test_header_transport_defaults_are_authorization_bearer_and_session_token() -> None:
    transport = HeaderTransport()
    assert (transport.header, transport.scheme, transport.response_header) == (
        "Authorization",
        "Bearer",
        "Session-Token",
    )
    assert transport.vary == "Authorization" and transport.explicit


@pytest.mark.parametrize(
    "options",
    [
        {"header": "Bad Header"},
        {"header": ""},
        {"response_header": "X:Y"},
        {"response_header": "Set-Cookie"},
        {"scheme": "Two words"},
        {"scheme": ""},
    ],
)
def test_invalid_header_transport_settings_fail_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="HeaderTransport"):
        HeaderTransport(**options)


def test_header_transport_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        HeaderTransport("Authorization")  # type: ignore[call-arg]


def test_transport_option_rejects_what_is_not_a_transport() -> None:
    app = web.Application()
    with pytest.raises(ConfigurationError, match="transport="):
        setup(app, MemoryStore(), transport="header")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="at least one"):
        setup(app, MemoryStore(), transport=[])


# -- several sessions on header transports ------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        ({}, {}, "from the Authorization header with scheme 'Bearer'"),
        ({}, {"response_header": "Other-Token"}, "from the Authorization header"),
        ({}, {"scheme": "BEARER", "response_header": "Other-Token"}, "Authorization header"),
        ({"header": "X-Token", "scheme": None}, {"header": "x-token", "scheme": None,
         "response_header": "Other-Token"}, "x-token header with no scheme"),
        ({}, {"header": "X-Token", "response_header": "session-token"}, "session-token response"),
    ],
)  # fmt: skip
def test_two_sessions_whose_header_transports_clash_fail_at_setup(
    first: dict[str, Any], second: dict[str, Any], reason: str
) -> None:
    app = web.Application()
    setup(app, MemoryStore(), transport=HeaderTransport(**first))
    with pytest.raises(ConfigurationError, match=reason) as caught:
        setup(app, MemoryStore(), cookie_name="api2", transport=HeaderTransport(**second))
    assert "'AIOHTTP_SESSION' and 'api2'" in str(caught.value)
    assert "response_header=" in str(caught.value)  # says how to fix it
    # A list that holds the clashing transport is refused too, whichever comes first.
    with pytest.raises(ConfigurationError, match=reason):
        setup(
            app,
            MemoryStore(),
            cookie_name="api3",
            transport=[CookieTransport(), HeaderTransport(**second)],
        )


async def test_two_sessions_on_their_own_headers_keep_their_own_tokens(
    aiohttp_client: Any,
) -> None:
    app = web.Application()
    setup(app, MemoryStore(), transport=HeaderTransport())
    setup(
        app,
        MemoryStore(),
        cookie_name="device",
        transport=HeaderTransport(header="X-Device", scheme=None, response_header="Device-Token"),
    )
    # The same Authorization header with another scheme is a third, separate token.
    setup(
        app,
        EncryptedCookieStore(generate_key()),
        cookie_name="partner",
        transport=HeaderTransport(scheme="Partner", response_header="Partner-Token"),
    )

    async def put(request: web.Request) -> web.Response:
        for name in (None, "device", "partner"):
            session = await get_session(request, name)
            session["who"] = name or "user"
        return web.Response(text="ok")

    async def who(request: web.Request) -> web.Response:
        found = {}
        for name in (None, "device", "partner"):
            found[name or "user"] = (await get_session(request, name)).get("who")
        return web.json_response(found)

    app.router.add_post("/put", put)
    app.router.add_get("/who", who)
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    response = await client.post("/put")
    tokens = {
        name: response.headers[name] for name in ("Session-Token", "Device-Token", "Partner-Token")
    }
    assert len(set(tokens.values())) == 3
    each = [
        ({"Authorization": f"Bearer {tokens['Session-Token']}"}, {"user": "user"}),
        ({"X-Device": tokens["Device-Token"]}, {"device": "device"}),
        ({"Authorization": f"Partner {tokens['Partner-Token']}"}, {"partner": "partner"}),
    ]
    for headers, expected in each:
        found = await (await client.get("/who", headers=headers)).json()
        assert {k: v for k, v in found.items() if v is not None} == expected
    # Another session's token in the user's header opens nothing.
    wrong = {"Authorization": f"Bearer {tokens['Device-Token']}"}
    assert await (await client.get("/who", headers=wrong)).json() == {
        "user": None,
        "device": None,
        "partner": None,
    }


def test_unknown_option_names_the_closest_one() -> None:
    with pytest.raises(TypeError, match="did you mean 'transport'"):
        setup(web.Application(), MemoryStore(), transprt=HeaderTransport())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="purge_interval"):
        session_middleware(MemoryStore(), purge_interval=5)  # type: ignore[call-arg]


# -- the header transport end to end ------------------------------------------------------------


async def test_header_client_never_gets_a_cookie_and_varies_on_authorization(
    aiohttp_client: Any, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, build_app(store, HEADER))
    response = await client.post("/incr")
    token = token_of(HEADER, response)
    assert "Set-Cookie" not in response.headers
    assert response.headers["Vary"] == "Authorization"
    response = await client.post("/incr", headers=HEADER.present(token))
    assert await response.json() == 2
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_the_scheme_is_matched_case_insensitively(aiohttp_client: Any, scheme: str) -> None:
    client = await client_for(aiohttp_client, build_app(MemoryStore(), HEADER))
    token = await login(client, HEADER, user="alice")
    response = await client.get("/read", headers={"Authorization": f"{scheme} {token}"})
    assert (await response.json())["data"] == {"user": "alice"}


async def test_bare_token_header_without_a_scheme(aiohttp_client: Any) -> None:
    transport = HeaderTransport(header="X-Session-Token", scheme=None)
    app = web.Application()
    setup(app, MemoryStore(), transport=transport)

    async def write(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["user"] = "bob"
        return web.Response(text="ok")

    async def show(request: web.Request) -> web.Response:
        return web.json_response(dict(await get_session(request)))

    app.router.add_post("/", write)
    app.router.add_get("/", show)
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    response = await client.post("/")
    token = response.headers["Session-Token"]
    assert response.headers["Vary"] == "X-Session-Token"
    response = await client.get("/", headers={"X-Session-Token": token})
    assert await response.json() == {"user": "bob"}
    # The bearer form is not this header's format: it opens nothing.
    response = await client.get("/", headers={"X-Session-Token": f"Bearer {token}"})
    assert await response.json() == {}


async def test_save_session_returns_the_token_to_present(
    aiohttp_client: Any, wire: Wire, store: AbstractStore
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting, wire))
    response = await client.post("/save-now")
    token = (await response.json())["token"]
    assert token
    issued = token_of(wire, response)
    if store.client_side:
        # the token is the data: the later change re-sealed it, and the response has the newest
        assert counting.saves == 2
    else:
        assert issued == token
        assert counting.saves == 2  # created by save_session, updated on the way out
    body = await read(client, wire, issued)
    assert body["data"] == {"user": "alice", "after": "saved on the way out"}


async def test_save_session_of_an_unchanged_session_writes_nothing(
    aiohttp_client: Any, wire: Wire, store: AbstractStore
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting, wire))
    token = await login(client, wire, user="alice")
    saves = counting.saves
    response = await client.get("/save-unchanged", headers=wire.present(token))
    assert (await response.json())["token"] == token
    assert counting.saves == saves
    response = await client.get("/save-unchanged")
    assert (await response.json())["token"] is None


async def test_save_session_after_invalidate_returns_none(aiohttp_client: Any, wire: Wire) -> None:
    app = web.Application()
    setup(app, MemoryStore(), transport=wire.transport)

    async def logout(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.invalidate()
        return web.json_response({"token": await save_session(request)})

    async def write(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["user"] = "alice"
        return web.json_response({"token": await save_session(request)})

    app.router.add_post("/logout", logout)
    app.router.add_post("/login", write)
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    token = (await (await client.post("/login")).json())["token"]
    response = await client.post("/logout", headers=wire.present(token))
    assert (await response.json())["token"] is None
    assert wire.cleared(response)


async def test_save_session_while_the_store_is_down_is_a_503(aiohttp_client: Any) -> None:
    class Down(MemoryStore):
        local = False

        async def save(self, *args: Any, **kwargs: Any) -> str | None:
            raise OSError("connection refused")

    app = web.Application()
    setup(app, Down(), transport=HeaderTransport())

    async def login_route(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["user"] = "alice"
        return web.json_response({"token": await save_session(request)})

    app.router.add_post("/login", login_route)
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    response = await client.post("/login")
    assert response.status == 503
    assert response.headers["Retry-After"]
    assert "Session-Token" not in response.headers


# -- several transports ------------------------------------------------------------------------


def both(store: AbstractStore) -> web.Application:
    app = build_app(store, HEADER)
    # build_app set up one transport; an app that accepts both is set up the same way.
    app2 = web.Application()
    setup(app2, store, transport=[CookieTransport(), HeaderTransport()])
    for route in app.router.routes():
        info = route.resource.canonical if route.resource is not None else "/"
        app2.router.add_route(route.method, info, route.handler)
    return app2


async def test_one_app_serves_browsers_and_api_clients_on_one_store(
    aiohttp_client: Any, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, both(store))
    cookie_wire = Wire("cookie")
    # a request with no token is answered on the first transport listed: the cookie
    browser = await login(client, cookie_wire, user="browser")
    response = await client.post("/incr")
    assert set_cookies(response)[COOKIE].value and "Session-Token" not in response.headers
    assert (await read(client, cookie_wire, browser))["data"] == {"user": "browser"}
    # an API client's token comes from save_session() and is answered in the header
    response = await client.post("/save-now")
    api = (await response.json())["token"]
    response = await client.get("/read", headers=HEADER.present(api))
    # save_session() returns the token as saved at that moment: a client-side store seals
    # later changes into a newer token, which that response carried (here in its cookie)
    expected = (
        {"user": "alice"}
        if store.client_side
        else {"user": "alice", "after": "saved on the way out"}
    )
    assert (await response.json())["data"] == expected
    assert response.headers["Vary"] == "Authorization, Cookie"
    response = await client.post("/set/k/v", headers=HEADER.present(api))
    assert "Set-Cookie" not in response.headers
    api = HEADER.follow(response, api) or ""
    assert (await read(client, HEADER, api))["data"]["k"] == "v"


async def test_when_both_are_presented_the_header_wins(
    aiohttp_client: Any, store: AbstractStore
) -> None:
    client = await client_for(aiohttp_client, both(store))
    cookie_wire = Wire("cookie")
    browser = await login(client, cookie_wire, user="browser")
    response = await client.post("/save-now")
    api = (await response.json())["token"]
    headers = {**cookie_wire.present(browser), **HEADER.present(api)}
    response = await client.get("/read", headers=headers)
    assert (await response.json())["data"]["user"] == "alice"
    # a change goes back on the transport the token came in on
    response = await client.post("/regenerate", headers=headers)
    assert "Set-Cookie" not in response.headers
    assert token_of(HEADER, response) != api
    # a bad header is not rescued by a good cookie: the header is what the client chose
    headers = {**cookie_wire.present(browser), "Authorization": "Bearer not-a-token"}
    response = await client.get("/read", headers=headers)
    assert await response.json() == FRESH


# -- hostile header input, on every store -------------------------------------------------------

#: Each case is an Authorization header (or pair) an attacker or a broken client can send.
HOSTILE: dict[str, list[tuple[str, str]]] = {
    "no scheme": [("Authorization", "{token}")],
    "wrong scheme": [("Authorization", "Basic {token}")],
    "scheme glued to the token": [("Authorization", "Bearer{token}")],
    "two authorization headers": [
        ("Authorization", "Bearer {token}"),
        ("Authorization", "Bearer {token}"),
    ],
    "empty token": [("Authorization", "Bearer ")],
    "scheme only": [("Authorization", "Bearer")],
    "token with a comma": [("Authorization", "Bearer {token},x")],
    "token with a space inside": [("Authorization", "Bearer {head} {tail}")],
    "non-ascii token": [("Authorization", "Bearer {token}é")],
    "control character": [("Authorization", "Bearer {head}\x01{tail}")],
    "tab instead of a space": [("Authorization", "Bearer\t{token}")],
    "token that is someone else's cookie-store token": [("Authorization", "Bearer {other}")],
    "token under the limit of aiohttp": [("Authorization", "Bearer " + "A" * 8000)],
}


async def send_raw(
    client: Any, method: str, path: str, headers: list[tuple[str, str]]
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request with exactly these header lines (UTF-8, control characters and
    all, which the aiohttp client refuses to send); the answer parsed by hand."""
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        head += "Content-Length: 0\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
        writer.write(head.encode() + b"\r\n")
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    answer = {}
    for line in lines:
        name, _, value = line.partition(":")
        answer[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), answer, body


def fill(template: str, token: str, other: str) -> str:
    half = len(token) // 2
    return template.format(token=token, head=token[:half], tail=token[half:], other=other)


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_authorization_header_reads_as_a_fresh_session(
    aiohttp_client: Any,
    store: AbstractStore,
    case: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    counting = CountingStore(store)
    client = await client_for(aiohttp_client, build_app(counting, HEADER))
    token = await login(client, HEADER, user="alice")
    other = await EncryptedCookieStore(generate_key()).save(
        None, b"\x01" + b"\x00" * 12 + b'[{"user":"mallory"}]', ttl=60, namespace="OTHER"
    )
    assert other is not None
    headers = [(name, fill(value, token, other)) for name, value in HOSTILE[case]]
    saves, deletes = counting.saves, counting.deletes
    caplog.set_level(logging.DEBUG, logger="aiohttp_sessionkit")
    status, answer, body = await send_raw(client, "GET", "/read", headers)
    assert status in (200, 400)
    if status == 200:
        assert json.loads(body) == FRESH
    assert (counting.saves, counting.deletes) == (saves, deletes)
    assert "set-cookie" not in answer and "session-token" not in answer
    # a write with the same header starts a fresh session and never adopts the presented token
    status, answer, body = await send_raw(client, "POST", "/set/user/mallory", headers)
    assert status in (200, 400)
    if status == 200:
        fresh = answer["session-token"]
        assert fresh and fresh != token and fresh != other
    assert (await read(client, HEADER, token))["data"] == {"user": "alice"}
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert token[:16] not in logged and other[:16] not in logged


async def test_oversize_authorization_header_is_aiohttps_400(
    aiohttp_client: Any, store_factory: StoreFactory
) -> None:
    counting = CountingStore(store_factory())
    client = await client_for(aiohttp_client, build_app(counting, HEADER))
    response = await client.get("/read", headers={"Authorization": "Bearer " + "A" * 10 * 1024})
    assert response.status == 400
    assert counting.calls == 0


# -- caches --------------------------------------------------------------------------------------


async def test_a_response_that_hands_out_a_token_is_private(
    aiohttp_client: Any, wire: Wire
) -> None:
    client = await client_for(aiohttp_client, build_app(MemoryStore(), wire))
    response = await client.post("/incr")
    token = token_of(wire, response)
    assert response.headers["Cache-Control"] == "private"
    # a read that hands out nothing leaves caching to the application (Vary is enough)
    response = await client.get("/read", headers=wire.present(token))
    assert "Cache-Control" not in response.headers
    response = await client.post("/logout", headers=wire.present(token))
    assert wire.cleared(response)
    assert response.headers["Cache-Control"] == "private"


async def test_the_handlers_own_cache_control_is_kept(aiohttp_client: Any, wire: Wire) -> None:
    app = web.Application()
    setup(app, MemoryStore(), transport=wire.transport)

    async def handler(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["n"] = 1
        return web.Response(text="ok", headers={"Cache-Control": "no-store"})

    app.router.add_post("/", handler)
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    response = await client.post("/")
    assert wire.issued(response)
    assert response.headers.getall("Cache-Control") == ["no-store"]


#: A handler's own Vary (one or more header lines) -> the Vary the response ends with.
#: {v} is the transport's header (Cookie or Authorization); names compare whole and
#: case-insensitively, so a longer name that contains ours never stands in for it.
VARY_MERGES: dict[str, tuple[list[str], str | list[str]]] = {
    "name-containing-ours": (["X-{v}-Consent"], "X-{v}-Consent, {v}"),
    "proxy-prefixed": (["Proxy-{v}"], "Proxy-{v}, {v}"),
    "ours-as-a-prefix": (["{v}-Id"], "{v}-Id, {v}"),
    "ours-inside-a-list": (["Accept, X-{v}-Consent"], "Accept, X-{v}-Consent, {v}"),
    "star": (["*"], "*"),
    "star-in-a-list": (["Accept, *"], "Accept, *"),
    "ours-lowercase": (["{lv}"], "{lv}"),
    "ours-uppercase": (["{uv}"], "{uv}"),
    "ours-with-whitespace": (["Accept ,\t {lv}  ,x"], "Accept ,\t {lv}  ,x"),
    "ours-in-a-second-line": (["Accept", "{v}"], ["Accept", "{v}"]),
    "others-in-two-lines": (["Accept", "X-{v}-Consent"], "Accept, X-{v}-Consent, {v}"),
    "empty": ([""], "{v}"),
}


@pytest.mark.parametrize("case", sorted(VARY_MERGES))
async def test_vary_merge_compares_whole_field_names(
    aiohttp_client: Any, wire: Wire, case: str
) -> None:
    def fill(text: str) -> str:
        return text.format(v=wire.vary, lv=wire.vary.lower(), uv=wire.vary.upper())

    given, expected = VARY_MERGES[case]
    app = web.Application()
    setup(app, MemoryStore(), transport=wire.transport)

    async def handler(request: web.Request) -> web.Response:
        await get_session(request)
        response = web.Response(text="ok")
        for line in given:
            response.headers.add("Vary", fill(line))
        return response

    app.router.add_get("/", handler)
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    response = await client.get("/")
    assert response.status == 200
    lines = [expected] if isinstance(expected, str) else expected
    assert response.headers.getall("Vary") == [fill(line) for line in lines]
