"""Websockets on one app process closed (1008) by sessions ended from another OS process.

The websocket's server runs in the test process; an app process of
tests/harness/multiprocess_app.py shares only the store (Redis or PostgreSQL) with it and
ends sessions through its administrator's routes: ``end_user_sessions`` and
``end_session`` by handle, with sessions bound to users (``user_key="user"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from tests.harness.multiprocess_app import (
    WS_IDLE_TIMEOUT,
    WS_TOUCH_INTERVAL,
    build_app,
    build_store,
)
from tests.system.test_multiprocess import COOKIE as NAME
from tests.system.test_multiprocess import AppProcesses


@pytest.fixture(scope="module", params=["redis", "postgres"])
def admin_process(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str, AppProcesses]]:
    """One OS process of tests/harness/multiprocess_app.py (``--websocket``: sessions bound
    with ``user_key="user"``) on a fresh prefix or table of the shared Redis or PostgreSQL
    server; yields the store kind, target and name for a first app to share it."""
    kind = request.param
    target = request.getfixturevalue(f"{kind}_server").url
    name = f"ws_{uuid.uuid4().hex[:8]}"
    if kind == "redis":
        name += ":"
    process = AppProcesses(kind, target, name, "--websocket", count=1)
    try:
        process.wait_ready()
        yield kind, target, name, process
    finally:
        process.stop()


@contextlib.asynccontextmanager
async def _first_app(
    admin: tuple[str, str, str, AppProcesses],
) -> AsyncIterator[tuple[TestServer, aiohttp.ClientSession]]:
    """The same app as the admin process, served in this process on a real port, and an
    HTTP client without a cookie jar (each request names its cookie)."""
    kind, target, name, _ = admin
    store = build_store(kind, target, name)
    server = TestServer(build_app(store, websocket=True))
    await server.start_server()
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            yield server, http
    finally:
        await server.close()
        await store.close()


async def sign_in(
    server: TestServer, http: aiohttp.ClientSession, user: str
) -> tuple[str, aiohttp.ClientWebSocketResponse]:
    """Sign ``user`` in on ``server``; their token and an echoing websocket open with it."""
    async with http.post(server.make_url(f"/login/{user}")) as response:
        assert response.status == 200
        token = response.cookies[NAME].value
    ws = await http.ws_connect(server.make_url("/ws"), headers={"Cookie": f"{NAME}={token}"})
    await ws.send_str("ping")
    assert (await ws.receive(timeout=5)).data == f"{user}: ping"
    return token, ws


async def assert_closed_with_1008_within_one_interval(
    ws: aiohttp.ClientWebSocketResponse,
) -> None:
    started = time.monotonic()
    message = await ws.receive(timeout=WS_TOUCH_INTERVAL + 3)
    elapsed = time.monotonic() - started
    assert message.type is WSMsgType.CLOSE, message
    assert ws.close_code == 1008
    # The next check is at most one interval away; the slack is its store round trip.
    assert elapsed < WS_TOUCH_INTERVAL + 0.75, elapsed


async def assert_still_open(ws: aiohttp.ClientWebSocketResponse, user: str) -> None:
    # Past one more check of this websocket too: it found its session alive.
    await asyncio.sleep(WS_TOUCH_INTERVAL + 0.25)
    await ws.send_str("still there?")
    reply = await ws.receive(timeout=5)
    assert (reply.type, reply.data) == (WSMsgType.TEXT, f"{user}: still there?")
    assert not ws.closed


async def _talk(ws: aiohttp.ClientWebSocketResponse, user: str, until: float) -> None:
    """Messages on ``ws`` until the monotonic time ``until``, each echoed."""
    while time.monotonic() < until:
        await ws.send_str("ping")
        reply = await ws.receive(timeout=5)
        assert (reply.type, reply.data) == (WSMsgType.TEXT, f"{user}: ping"), reply
        await asyncio.sleep(0.4)
    assert not ws.closed


async def _read(url: str, http: aiohttp.ClientSession, token: str) -> Any:
    async with http.get(url, headers={"Cookie": f"{NAME}={token}"}) as response:
        assert response.status == 200
        return await response.json()


@pytest.mark.servers
async def test_end_user_sessions_in_another_process_closes_the_users_websockets_with_1008(
    admin_process: tuple[str, str, str, AppProcesses],
) -> None:
    """The websocket's server and the process ending the sessions share only the store.
    Meanwhile another user talks on a websocket of the same server past the idle timeout:
    it stays open, and the other process still finds that user's session."""
    admin = admin_process[3]
    async with _first_app(admin_process) as (server, http):
        alice, alice_ws = await sign_in(server, http, "alice")
        bob, bob_ws = await sign_in(server, http, "bob")
        talking = asyncio.create_task(
            _talk(bob_ws, "bob", until=time.monotonic() + WS_IDLE_TIMEOUT + WS_TOUCH_INTERVAL)
        )
        async with http.post(admin.url(0, "/end-all/alice")) as response:
            assert (response.status, await response.json()) == (200, 1)
            assert int(response.headers["X-Pid"]) != os.getpid()  # another OS process
        await assert_closed_with_1008_within_one_interval(alice_ws)
        await talking  # bob's websocket kept bob's session past the idle timeout
        assert (await _read(admin.url(0, "/read"), http, alice))["new"] is True
        assert (await _read(admin.url(0, "/read"), http, bob))["data"] == {"user": "bob"}
        await bob_ws.close()


@pytest.mark.servers
async def test_end_session_in_another_process_closes_that_sessions_websocket_with_1008(
    admin_process: tuple[str, str, str, AppProcesses],
) -> None:
    """end_session(app, handle), the handle listed by user_sessions in the other process;
    the same user's other session (another device) keeps its websocket."""
    admin = admin_process[3]
    async with _first_app(admin_process) as (server, http):
        _, phone_ws = await sign_in(server, http, "carol")
        async with http.get(admin.url(0, "/handles/carol")) as response:
            [phone] = await response.json()
        laptop, laptop_ws = await sign_in(server, http, "carol")
        async with http.post(admin.url(0, f"/end/{phone}")) as response:
            assert (response.status, await response.json()) == (200, True)
        await assert_closed_with_1008_within_one_interval(phone_ws)
        await assert_still_open(laptop_ws, "carol")
        async with http.get(admin.url(0, "/sessions/carol")) as response:
            assert await response.json() == 1
        assert (await _read(admin.url(0, "/read"), http, laptop))["data"] == {"user": "carol"}
        await laptop_ws.close()
