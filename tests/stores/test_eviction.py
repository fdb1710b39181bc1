"""An anonymous flood against the stores that run out of room, through a real aiohttp server.

MemoryStore holds ``max_entries`` sessions: anonymous traffic (a session per visit) must
never push out a logged-in user, expired records must go before any live one, and a store
full of logged-in users must refuse newcomers (503) rather than log anyone out. Redis with
``maxmemory`` and the ``noeviction`` policy refuses writes once full: each refusal is a 503
with ``Retry-After``, never a 500, and reads and logouts keep working.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import DummyCookieJar, web

from aiohttp_sessionkit import AbstractStore, MemoryStore, get_session, new_session, setup
from aiohttp_sessionkit.stores.redis import RedisStore
from tests.harness.servers import RedisServer, ServerHandle, serve

COOKIE = "AIOHTTP_SESSION"
#: Requests in flight at once: the server and the client share one loop on 2 cores.
IN_FLIGHT = 50


def flood_app(store: AbstractStore, *, visit_bytes: int = 16) -> web.Application:
    """Routes of a site whose every anonymous page view stores something in a session (the
    pattern of a CSRF token kept in the session), and a login."""

    async def login(request: web.Request) -> web.Response:
        session = await new_session(request)
        session["user"] = request.match_info["user"]
        return web.Response(text="ok")

    async def visit(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["csrf"] = "t" * visit_bytes
        if "short" in request.query:
            session.max_age = 1
        return web.Response(text="ok")

    async def who(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.Response(text=session.get("user") or ("visitor" if session else "-"))

    async def logout(request: web.Request) -> web.Response:
        (await get_session(request)).invalidate()
        return web.Response(text="ok")

    app = web.Application()
    setup(app, store)
    app.router.add_post("/login/{user}", login)
    app.router.add_get("/visit", visit)
    app.router.add_get("/who", who)
    app.router.add_post("/logout", logout)
    return app


def cookie_of(response: Any) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={response.cookies[COOKIE].value}"}


async def who(client: Any, cookie: dict[str, str]) -> str:
    response = await client.get("/who", headers=cookie)
    assert response.status == 200
    return str(await response.text())


async def flood(
    client: Any, requests: int, path: str = "/visit", *, method: str = "GET"
) -> collections.Counter[tuple[int, bool]]:
    """Send ``requests`` cookie-less requests, IN_FLIGHT at a time; count (status, whether a
    503 carried Retry-After)."""
    seen: collections.Counter[tuple[int, bool]] = collections.Counter()

    async def one() -> None:
        async with client.request(method, path) as response:
            await response.read()
            seen[response.status, "Retry-After" in response.headers] += 1

    async with asyncio.timeout(120):
        for start in range(0, requests, IN_FLIGHT):
            await asyncio.gather(*(one() for _ in range(min(IN_FLIGHT, requests - start))))
    return seen


# -- MemoryStore ----------------------------------------------------------------------------------

CAPACITY = 1_000
FLOOD = 20_000


@pytest.mark.slow
async def test_an_idle_logged_in_user_survives_an_anonymous_flood(aiohttp_client: Any) -> None:
    store = MemoryStore(max_entries=CAPACITY)
    client = await aiohttp_client(flood_app(store), cookie_jar=DummyCookieJar())
    alice = cookie_of(await client.post("/login/alice"))
    # 100 live visitors, then 500 sessions that expire after a second: the live ones are the
    # least recently used, far beyond any "look at the oldest few" scan.
    early = [cookie_of(await client.get("/visit")) for _ in range(100)]
    assert await flood(client, 500, "/visit?short") == {(200, False): 500}
    await asyncio.sleep(1.1)
    # Fill the store: every expired record must go before any live visitor.
    assert await flood(client, CAPACITY - 101) == {(200, False): CAPACITY - 101}
    assert len(store) == CAPACITY
    assert [await who(client, cookie) for cookie in early] == ["visitor"] * 100

    # The flood: 20 times the store's size in anonymous visits, while alice stays idle.
    assert await flood(client, FLOOD) == {(200, False): FLOOD}
    assert len(store) == CAPACITY
    assert await who(client, alice) == "alice"
    assert len(store._established) == 1


@pytest.mark.slow
async def test_a_store_full_of_logged_in_users_refuses_visitors_and_logins_with_503(
    aiohttp_client: Any,
) -> None:
    store = MemoryStore(max_entries=CAPACITY)
    client = await aiohttp_client(flood_app(store), cookie_jar=DummyCookieJar())
    users = [cookie_of(await client.post(f"/login/u{i}")) for i in range(CAPACITY)]
    assert await flood(client, 2_000) == {(503, True): 2_000}
    assert await flood(client, 200, "/login/eve", method="POST") == {(503, True): 200}
    assert [await who(client, u) for u in users] == [f"u{i}" for i in range(CAPACITY)]
    await client.post("/logout", headers=users[0])
    assert await flood(client, 1) == {(200, False): 1}


# -- Redis with maxmemory and noeviction -----------------------------------------------------------


class FullRedisServer(RedisServer):
    """A Redis that refuses writes (OOM) once 4 MB are used, instead of evicting keys."""

    options = ("--maxmemory", "4mb", "--maxmemory-policy", "noeviction")


@pytest.fixture(scope="module")
def full_redis() -> Iterator[ServerHandle]:
    yield from serve("SESSIONKIT_TEST_NOEVICTION_REDIS_URL", FullRedisServer)


@pytest.fixture
async def redis_store(full_redis: ServerHandle) -> AsyncIterator[RedisStore]:
    store = RedisStore(full_redis.url, key_prefix="flood:")
    yield store
    await store.close()


async def test_a_full_redis_answers_503_with_retry_after_and_keeps_reads_and_logouts(
    aiohttp_client: Any, redis_store: RedisStore
) -> None:
    client = await aiohttp_client(
        flood_app(redis_store, visit_bytes=2_000), cookie_jar=DummyCookieJar()
    )
    alice = cookie_of(await client.post("/login/alice"))
    # 4 MB of 2 kB sessions is about 2,000 writes: the last ones must be refused.
    seen = await flood(client, 3_000)
    assert set(seen) <= {(200, False), (503, True)}, seen
    assert seen[503, True] >= 500, seen
    # A login's small write may still fit now and then: refused or saved, never a 500.
    logins = await flood(client, 20, "/login/eve", method="POST")
    assert set(logins) <= {(200, False), (503, True)}, logins
    assert await who(client, alice) == "alice"  # reads still work
    logout = await client.post("/logout", headers=alice)  # DEL is allowed, and frees memory
    assert logout.status == 200 and logout.cookies[COOKIE].value == ""
    assert await who(client, alice) == "-"
