"""Websockets keep their session alive while messages flow, and close (1008) when it ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from aiohttp_sessionkit import get_session, session_websocket, setup
from aiohttp_sessionkit.abc import AbstractStore
from tests.conftest import StoreFactory, _factory
from tests.harness.multiprocess_app import build_app
from tests.system.test_multiprocess_websockets import (
    assert_closed_with_1008_within_one_interval,
    assert_still_open,
    sign_in,
)

NAME = "AIOHTTP_SESSION"


@pytest.fixture(params=["memory", "redis", "postgres"])
async def ws_store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    async for factory in _factory(request, request.param):
        yield factory


def _app(store: AbstractStore) -> web.Application:
    async def login(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.regenerate()
        session["user"] = "alice"
        return web.Response(text="in")

    async def whoami(request: web.Request) -> web.Response:
        return web.Response(text=str((await get_session(request)).get("user")))

    async def logout(request: web.Request) -> web.Response:
        (await get_session(request)).invalidate()
        return web.Response(text="out")

    async def socket(request: web.Request) -> web.WebSocketResponse:
        await get_session(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async with session_websocket(request, ws) as live:
            async for message in live:
                if message.type is WSMsgType.TEXT:
                    await ws.send_str("echo " + message.data)
        return ws

    app = web.Application()
    # Short timeouts: idle 3 s, a check (and touch) every second.
    setup(app, store, idle_timeout=3, touch_interval=1, absolute_timeout=60)
    app.router.add_get("/login", login)
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/logout", logout)
    app.router.add_get("/ws", socket)
    return app


async def _logged_in(client: TestClient[web.Request, web.Application]) -> str:
    response = await client.get("/login")
    assert response.status == 200
    return response.cookies[NAME].value


async def test_messages_keep_the_session_alive_past_its_idle_timeout(
    ws_store_factory: StoreFactory,
) -> None:
    async with TestClient(TestServer(_app(ws_store_factory()))) as client:
        await _logged_in(client)
        ws = await client.ws_connect("/ws")
        started = time.monotonic()
        while time.monotonic() - started < 5:  # well past the 3 s idle timeout
            await ws.send_str("ping")
            reply = await ws.receive(timeout=2)
            assert reply.type is WSMsgType.TEXT, reply
            await asyncio.sleep(0.4)
        assert not ws.closed
        await ws.close()
        # The session itself was kept: an HTTP request still finds the user.
        assert await (await client.get("/whoami")).text() == "alice"


async def test_a_silent_websocket_is_closed_when_its_session_expires(
    ws_store_factory: StoreFactory,
) -> None:
    async with TestClient(TestServer(_app(ws_store_factory()))) as client:
        await _logged_in(client)
        ws = await client.ws_connect("/ws")
        message = await ws.receive(timeout=6)  # idle 3 s, plus one check interval
        assert message.type is WSMsgType.CLOSE
        assert ws.close_code == 1008


async def test_a_logout_in_another_client_closes_the_websocket_with_1008(
    ws_store_factory: StoreFactory,
) -> None:
    async with TestClient(TestServer(_app(ws_store_factory()))) as client:
        token = await _logged_in(client)
        ws = await client.ws_connect("/ws")
        await ws.send_str("ping")
        assert (await ws.receive(timeout=2)).data == "echo ping"
        async with TestClient(TestServer(_app(ws_store_factory()))) as other:
            other.session.cookie_jar.update_cookies({NAME: token})
            assert (await other.get("/logout")).status == 200
        started = time.monotonic()
        message = await ws.receive(timeout=3)
        assert message.type is WSMsgType.CLOSE
        assert ws.close_code == 1008
        assert time.monotonic() - started < 2.5  # within about one check interval


async def test_a_client_side_session_cut_off_by_another_instance_closes_its_websocket(
    deny_list_store_factory: StoreFactory,
) -> None:
    """Cookie and JWT stores with a deny list (``revocation=``): end_user_sessions in another
    app instance (its own store object, sharing only the deny list, as another process
    would) refuses alice's token there, and her websocket here closes within one interval;
    bob's stays open."""
    first = TestServer(build_app(deny_list_store_factory(), websocket=True))
    second = TestServer(build_app(deny_list_store_factory(), websocket=True))
    await first.start_server()
    await second.start_server()
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            _, alice_ws = await sign_in(first, http, "alice")
            _, bob_ws = await sign_in(first, http, "bob")
            async with http.post(second.make_url("/end-all/alice")) as response:
                assert response.status == 200
            await assert_closed_with_1008_within_one_interval(alice_ws)
            await assert_still_open(bob_ws, "bob")
            await bob_ws.close()
    finally:
        await first.close()
        await second.close()


async def test_session_websocket_needs_a_loaded_session() -> None:
    from aiohttp_sessionkit import MemoryStore

    async def socket(request: web.Request) -> web.Response:
        ws = web.WebSocketResponse()
        try:
            session_websocket(request, ws)
        except RuntimeError as exc:
            return web.Response(status=409, text=str(exc))
        return web.Response(text="no error")

    app = web.Application()
    setup(app, MemoryStore())
    app.router.add_get("/ws", socket)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/ws")
        assert response.status == 409
        assert "get_session" in await response.text()


async def test_a_touch_keeps_a_change_another_request_saved_between_its_read_and_write(
    ws_store_factory: StoreFactory,
) -> None:
    """The websocket's touch reads the record, then writes it with a new access time: a
    request that saved in between keeps its change (the touch merges, issue 24)."""
    store = ws_store_factory()
    reached, release = asyncio.Event(), asyncio.Event()
    hold = [False]

    class Held(type(store)):  # type: ignore[misc]  # the same store, its load held once
        __slots__ = ()

        async def load(self, token: str, *, namespace: str) -> object:
            payload = await super().load(token, namespace=namespace)
            if hold[0]:
                hold[0] = False
                reached.set()
                await release.wait()
            return payload

    store.__class__ = Held
    app = _app(store)

    async def put(request: web.Request) -> web.Response:
        (await get_session(request))["cart"] = ["book"]
        return web.Response(text="put")

    async def cart(request: web.Request) -> web.Response:
        return web.json_response((await get_session(request)).get("cart"))

    app.router.add_get("/put", put)
    app.router.add_get("/cart", cart)
    async with TestClient(TestServer(app)) as client:
        await _logged_in(client)
        ws = await client.ws_connect("/ws")
        hold[0] = True  # the next load is the websocket's check: nothing else is in flight
        await ws.send_str("ping")  # activity: the check will touch
        assert (await ws.receive(timeout=2)).data == "echo ping"
        await asyncio.wait_for(reached.wait(), 5)
        assert (await client.get("/put")).status == 200  # saved while the touch waits
        release.set()
        await ws.send_str("ping")
        assert (await ws.receive(timeout=2)).data == "echo ping"
        await asyncio.sleep(1.5)  # the touch has written by now (a check every second)
        assert not ws.closed
        assert await (await client.get("/cart")).json() == ["book"]
        await ws.close()
