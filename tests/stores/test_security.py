"""Fixation, logout races, key rotation and id handling, through the middleware."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from aiohttp_sessionkit import (
    AbstractStore,
    EncryptedCookieStore,
    MemoryStore,
    generate_key,
    get_session,
    setup,
)
from aiohttp_sessionkit.ids import is_valid_session_id, record_key
from aiohttp_sessionkit.transports import presented_cookie
from tests.conftest import CountingStore, StoreFactory, set_cookies
from tests.stores.test_contract import (
    COOKIE,
    COOKIE_WIRE,
    client_for,
    cookie_value,
    login,
    read,
    with_cookie,
)


def racing_app(store: AbstractStore, gate: asyncio.Event, loaded: asyncio.Event) -> web.Application:
    """/slow-write loads the session, waits for the gate, then writes; /logout invalidates."""
    app = web.Application()
    setup(app, store)

    async def set_user(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["user"] = "alice"
        return web.Response(text="in")

    async def slow_write(request: web.Request) -> web.Response:
        session = await get_session(request)
        loaded.set()
        await gate.wait()
        session["cart"] = ["book"]
        return web.Response(text="written")

    async def logout(request: web.Request) -> web.Response:
        (await get_session(request)).invalidate()
        return web.Response(text="out")

    async def show(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response({"data": dict(session), "new": session.new})

    app.router.add_post("/set/user/alice", set_user)
    app.router.add_post("/slow-write", slow_write)
    app.router.add_post("/logout", logout)
    app.router.add_get("/read", show)
    return app


async def test_logout_is_not_undone_by_a_slower_concurrent_save(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    gate, loaded = asyncio.Event(), asyncio.Event()
    client = await client_for(aiohttp_client, racing_app(server_store_factory(), gate, loaded))
    cookie = await login(client, COOKIE_WIRE, user="alice")
    slow = asyncio.ensure_future(client.post("/slow-write", headers=with_cookie(cookie)))
    await loaded.wait()
    response = await client.post("/logout", headers=with_cookie(cookie))
    assert set_cookies(response)[COOKIE]["max-age"] == "0"
    gate.set()
    slow_response = await slow
    assert slow_response.status == 200
    # The slow request's save found the record gone: it saves nothing and sends no cookie
    # (tests/stores/test_races.py has the races that a deletion cookie here would lose).
    assert "Set-Cookie" not in slow_response.headers
    assert await read(client, COOKIE_WIRE, cookie) == {"data": {}, "new": True}


async def test_an_id_the_server_did_not_issue_is_never_adopted(
    aiohttp_client: Any, store_factory: StoreFactory
) -> None:
    client = await client_for(
        aiohttp_client, racing_app(store_factory(), asyncio.Event(), asyncio.Event())
    )
    planted = "A" * 43  # well-formed, never issued
    assert is_valid_session_id(planted)
    response = await client.post("/set/user/alice", headers=with_cookie(planted))
    issued = cookie_value(response)
    assert issued != planted
    assert await read(client, COOKIE_WIRE, planted) == {"data": {}, "new": True}
    assert (await read(client, COOKIE_WIRE, issued))["data"] == {"user": "alice"}


async def test_server_stores_file_sessions_under_a_hash_of_the_id(aiohttp_client: Any) -> None:
    store = MemoryStore()
    client = await client_for(aiohttp_client, racing_app(store, asyncio.Event(), asyncio.Event()))
    issued = await login(client, COOKIE_WIRE, user="alice")
    assert is_valid_session_id(issued)
    [key] = [*store._anonymous, *store._established]
    assert issued not in key
    assert key == hashlib.sha256(f"{COOKIE}\x00{issued}".encode()).hexdigest()
    assert key == record_key(COOKIE, issued)


async def test_session_ids_are_unique_and_carry_256_bits(aiohttp_client: Any) -> None:
    client = await client_for(
        aiohttp_client, racing_app(MemoryStore(), asyncio.Event(), asyncio.Event())
    )
    ids = {await login(client, COOKIE_WIRE, user="alice") for _ in range(50)}
    assert len(ids) == 50
    assert all(is_valid_session_id(i) and len(i) == 43 for i in ids)  # 43 * 6 bits >= 256


async def test_cookie_of_another_cookie_name_does_not_open(
    aiohttp_client: Any, store_factory: StoreFactory
) -> None:
    store = store_factory()
    first = web.Application()
    setup(first, store, cookie_name="first")
    second = web.Application()
    setup(second, store, cookie_name="second")

    async def write(request: web.Request) -> web.Response:
        (await get_session(request))["user"] = "alice"
        return web.Response(text="ok")

    async def show(request: web.Request) -> web.Response:
        return web.json_response(dict(await get_session(request)))

    first.router.add_post("/", write)
    second.router.add_get("/", show)
    client_first = await client_for(aiohttp_client, first)
    client_second = await client_for(aiohttp_client, second)
    value = set_cookies(await client_first.post("/"))["first"].value
    response = await client_second.get("/", headers={"Cookie": f"second={value}"})
    assert await response.json() == {}


async def test_rotated_key_still_opens_and_is_resealed_on_next_write(
    aiohttp_client: Any,
) -> None:
    old, new = generate_key(), generate_key()
    before = await client_for(
        aiohttp_client, racing_app(EncryptedCookieStore(old), asyncio.Event(), asyncio.Event())
    )
    cookie = await login(before, COOKIE_WIRE, user="alice")

    rotated_store = CountingStore(EncryptedCookieStore([new, old]))
    rotated = await client_for(
        aiohttp_client, racing_app(rotated_store, asyncio.Event(), asyncio.Event())
    )
    assert (await read(rotated, COOKIE_WIRE, cookie))["data"] == {"user": "alice"}
    response = await rotated.post("/set/user/alice", headers=with_cookie(cookie))
    resealed = cookie_value(response)

    only_new = await client_for(
        aiohttp_client, racing_app(EncryptedCookieStore(new), asyncio.Event(), asyncio.Event())
    )
    assert (await read(only_new, COOKIE_WIRE, resealed))["data"] == {"user": "alice"}
    # A key removed from the list opens nothing any more.
    assert await read(only_new, COOKIE_WIRE, cookie) == {"data": {}, "new": True}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], None),
        (["other=1"], None),
        (["AIOHTTP_SESSION=abc"], "abc"),
        (["a=1; AIOHTTP_SESSION=abc; b=2"], "abc"),
        (["a=1;AIOHTTP_SESSION=abc"], "abc"),
        (["XAIOHTTP_SESSION=abc"], None),
        (["XAIOHTTP_SESSION=x; AIOHTTP_SESSION=abc"], "abc"),
        (["AIOHTTP_SESSION=abc; XAIOHTTP_SESSION=x"], "abc"),
        (["AIOHTTP_SESSION="], None),
        (["AIOHTTP_SESSION=abc; AIOHTTP_SESSION=def"], None),
        (["AIOHTTP_SESSION=abc", "AIOHTTP_SESSION=def"], None),
        (["a=1", "AIOHTTP_SESSION=abc"], "abc"),
    ],
)
def test_only_one_unambiguous_session_cookie_is_read(
    headers: list[str], expected: str | None
) -> None:
    request = make_mocked_request("GET", "/", headers=CIMultiDict([("Cookie", h) for h in headers]))
    assert presented_cookie(request, COOKIE) == expected
