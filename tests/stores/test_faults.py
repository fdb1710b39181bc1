"""Store faults, made by really stopping and freezing the server processes.

The servers are shared by the whole test session: every test brings its server back in a
``finally`` (and ``start()`` waits until it serves), so later tests never see an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from aiohttp_sessionkit import AbstractStore, get_session
from tests.conftest import CountingStore, StoreFactory
from tests.harness.servers import ServerHandle
from tests.stores.test_contract import (
    COOKIE_WIRE,
    build_app,
    client_for,
    cookie_value,
    login,
    read,
    with_cookie,
)

_T = TypeVar("_T")

FAULT_KINDS = [
    "redis", "valkey", "memcached", "postgres", "mongo", "motor", "sql-mariadb", "sql-postgres",
]  # fmt: skip
#: Test servers that keep nothing across a restart (no persistence).
VOLATILE_KINDS = ("redis", "valkey", "memcached")
SERVER_FIXTURE = {
    "redis": "redis_server",
    "valkey": "valkey_server",
    "memcached": "memcached_server",
    "postgres": "postgres_server",
    "mongo": "mongo_server",
    "motor": "mongo_server",
    "sql-mariadb": "mariadb_server",
    "sql-postgres": "postgres_server",
}
#: The time budget per store call while a server is down: a stopped Redis or PostgreSQL
#: refuses connections at once, but the Mongo drivers wait for server selection (5 s).
DOWN_TIMEOUT = 1.0
#: The time budget per store call while a server hangs, and what a 503 may take on top.
HANG_TIMEOUT = 0.5
HANG_LIMIT = 2.5

pytestmark = pytest.mark.slow
every_server_store = pytest.mark.parametrize("server_store_factory", FAULT_KINDS, indirect=True)


@pytest.fixture
def server(
    server_store_factory: StoreFactory, request: pytest.FixtureRequest
) -> Iterator[ServerHandle]:
    """The server behind this test's store; left running whatever the test did."""
    handle: ServerHandle = request.getfixturevalue(SERVER_FIXTURE[server_store_factory.kind])
    if handle.external:
        pytest.skip("an external server cannot be stopped or frozen")
    try:
        yield handle
    finally:  # a safety net: the tests restore their server themselves
        handle.resume()
        if not handle.is_running:
            handle.start()


@contextlib.asynccontextmanager
async def stopped(server: ServerHandle) -> AsyncIterator[None]:
    """The server is down inside the block, and up again (serving) after it."""
    # In a thread: FerretDB takes seconds to stop while clients are connected, and the
    # event loop must keep running meanwhile.
    await asyncio.to_thread(server.stop)
    try:
        yield
    finally:
        await asyncio.to_thread(server.start)


@contextlib.contextmanager
def frozen(server: ServerHandle) -> Iterator[None]:
    """The server accepts connections but answers nothing inside the block."""
    server.pause()
    try:
        yield
    finally:
        server.resume()


def assert_unavailable(response: Any) -> None:
    assert response.status == 503
    assert response.headers["Retry-After"].isdigit()
    assert "Set-Cookie" not in response.headers


async def assert_recovered(client: Any) -> None:
    """The app, unchanged since the outage, saves and loads sessions again."""
    cookie: str | None = None
    for expected in (1, 2, 3):
        response = await client.post("/incr", headers=with_cookie(cookie) if cookie else {})
        assert response.status == 200
        assert await response.json() == expected
        if cookie is None:
            cookie = cookie_value(response)
    assert (await read(client, COOKIE_WIRE, cookie))["data"] == {"n": 3}


def app_for(factory: StoreFactory, store_timeout: float) -> web.Application:
    """The contract tests' app, plus /gated-write: load, wait for the test, then write."""
    app = build_app(factory(), COOKIE_WIRE, store_timeout=store_timeout)
    app[GATE] = Gate()

    async def gated_write(request: web.Request) -> web.Response:
        gate = request.app[GATE]
        session = await get_session(request)
        gate.loaded.put_nowait(None)
        await gate.release.wait()
        session["late"] = "write"
        return web.Response(text="written")

    app.router.add_post("/gated-write", gated_write)
    return app


class Gate:
    def __init__(self) -> None:
        self.loaded: asyncio.Queue[None] = asyncio.Queue()
        self.release = asyncio.Event()


GATE = web.AppKey("gate", Gate)


# -- a store that is down -----------------------------------------------------------------------


@every_server_store
async def test_store_down_answers_503_and_leaves_the_cookie_alone(
    aiohttp_client: Any, server_store_factory: StoreFactory, server: ServerHandle
) -> None:
    client = await client_for(aiohttp_client, app_for(server_store_factory, DOWN_TIMEOUT))
    cookie = await login(client, COOKIE_WIRE, user="alice")
    async with stopped(server):
        for method, path, headers in [
            ("GET", "/read", with_cookie(cookie)),
            ("POST", "/incr", with_cookie(cookie)),
            ("POST", "/set/user/mallory", with_cookie(cookie)),
            ("POST", "/incr", {}),  # a brand-new session that cannot be saved
            ("POST", "/logout", with_cookie(cookie)),
        ]:
            assert_unavailable(await client.request(method, path, headers=headers))
        # Routes that never touch the session do not notice the outage.
        for _ in range(3):
            response = await client.get("/untouched", headers=with_cookie(cookie))
            assert response.status == 200
            assert await response.text() == "plain"
    if server_store_factory.kind in VOLATILE_KINDS:
        # The test Redis and Valkey run without persistence, and memcached has none: a
        # restart loses every session. The old cookie then opens a fresh session, and
        # nothing is written for it.
        response = await client.get("/read", headers=with_cookie(cookie))
        assert response.status == 200
        assert await response.json() == {"data": {}, "new": True}
        assert "Set-Cookie" not in response.headers
    else:
        # The cookie was left alone and the failed writes and logout did nothing.
        assert (await read(client, COOKIE_WIRE, cookie))["data"] == {"user": "alice"}
    await assert_recovered(client)


@every_server_store
async def test_failed_save_never_leaves_a_cookie_pointing_at_unsaved_state(
    aiohttp_client: Any, server_store_factory: StoreFactory, server: ServerHandle
) -> None:
    app = app_for(server_store_factory, DOWN_TIMEOUT)
    client = await client_for(aiohttp_client, app)
    gate = app[GATE]
    cookie = await login(client, COOKIE_WIRE, user="alice")
    existing = asyncio.ensure_future(client.post("/gated-write", headers=with_cookie(cookie)))
    brand_new = asyncio.ensure_future(client.post("/gated-write"))  # no cookie before
    try:
        # Both handlers hold their session (loaded, or new) before the server goes away.
        async with asyncio.timeout(10):
            await gate.loaded.get()
            await gate.loaded.get()
        async with stopped(server):
            gate.release.set()  # now they write, and the save fails
            async with asyncio.timeout(15):
                for pending in (existing, brand_new):
                    assert_unavailable(await pending)
    finally:
        gate.release.set()
        for pending in (existing, brand_new):
            if not pending.done():
                pending.cancel()
            with contextlib.suppress(BaseException):
                (await pending).release()
    if server_store_factory.kind not in VOLATILE_KINDS:  # restarted empty otherwise
        assert (await read(client, COOKIE_WIRE, cookie))["data"] == {"user": "alice"}
    await assert_recovered(client)


class FreezesBeforeCreate(CountingStore):
    """A real store whose server freezes just before it is asked to create a record."""

    def __init__(self, inner: AbstractStore, server: ServerHandle) -> None:
        super().__init__(inner)
        self.server = server
        self.armed = False

    async def save(self, token: str | None, data: Any, *, ttl: int, namespace: str) -> str | None:
        if token is None and self.armed:
            self.server.pause()
        return await super().save(token, data, ttl=ttl, namespace=namespace)


@every_server_store
async def test_a_regenerate_whose_new_record_fails_leaves_the_old_session_working(
    aiohttp_client: Any, server_store_factory: StoreFactory, server: ServerHandle
) -> None:
    """regenerate() writes the new record first and deletes the old one only after that:
    when the write fails, the client gets a 503, keeps its cookie, and it still opens."""
    store = FreezesBeforeCreate(server_store_factory(), server)
    app = build_app(store, COOKIE_WIRE, store_timeout=HANG_TIMEOUT)
    client = await client_for(aiohttp_client, app)
    cookie = await login(client, COOKIE_WIRE, user="alice")
    store.armed = True
    try:
        async with asyncio.timeout(2 * HANG_LIMIT):
            response = await client.post("/regenerate", headers=with_cookie(cookie))
    finally:
        store.armed = False
        server.resume()
    assert_unavailable(response)
    assert store.deletes == 0  # the old record was never touched
    assert (await read(client, COOKIE_WIRE, cookie))["data"] == {"user": "alice"}
    await assert_recovered(client)


# -- a store that hangs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "server_store_factory",
    FAULT_KINDS,
    indirect=True,
)
async def test_hung_store_answers_503_within_the_budget_and_leaks_nothing(
    aiohttp_client: Any, server_store_factory: StoreFactory, server: ServerHandle
) -> None:
    kind = server_store_factory.kind
    client = await client_for(aiohttp_client, app_for(server_store_factory, HANG_TIMEOUT))
    cookie = await login(client, COOKIE_WIRE, user="alice")
    await assert_recovered(client)  # warm up: pools and driver tasks exist from here on
    tasks_before = set(asyncio.all_tasks())
    connections_before = await count_connections(kind, server)
    needing_the_store = [
        ("GET", "/read", with_cookie(cookie)),
        ("POST", "/incr", with_cookie(cookie)),
        ("POST", "/incr", {}),
        ("GET", "/read", with_cookie(cookie)),
        ("POST", "/set/user/mallory", with_cookie(cookie)),
        ("POST", "/logout", with_cookie(cookie)),
    ]
    connection_limit = connections_before
    if kind == "motor":
        # Motor runs each call in a thread, which asyncio cannot cancel: a timed-out call
        # keeps its connection until the server answers, then returns it to the pool. The
        # pool may grow by one connection per concurrently hung call, no more.
        connection_limit += len(needing_the_store)
    elif kind in ("postgres", "sql-postgres", "sql-mariadb"):
        # The store's pool replaces dropped connections, up to its size of 10.
        connection_limit = max(connection_limit, 10)

    for outage in range(2):  # twice: what the first outage left behind must not add up
        with frozen(server):
            for method, path, headers in needing_the_store:
                started = time.monotonic()
                async with asyncio.timeout(2 * HANG_LIMIT):  # fail fast, not after 5 min
                    response = await client.request(method, path, headers=headers)
                elapsed = time.monotonic() - started
                assert_unavailable(response)
                assert elapsed < HANG_LIMIT, f"{method} {path}: 503 after {elapsed:.2f} s"
            started = time.monotonic()
            async with asyncio.timeout(2 * HANG_LIMIT):
                response = await client.get("/untouched", headers=with_cookie(cookie))
            assert response.status == 200
            assert time.monotonic() - started < HANG_LIMIT

        # Frozen, not stopped: even Redis kept its data, and no write reached the session
        # (each request above timed out on its load, before writing).
        assert (await read(client, COOKIE_WIRE, cookie))["data"] == {"user": "alice"}
        await assert_recovered(client)

        # Every timed-out store call was cancelled for good: no task outlives its request.
        leftover = await settle(lambda: stray_tasks(tasks_before), lambda found: not found)
        assert not leftover, f"tasks left running after outage {outage + 1}: {leftover}"
        # Hung connections were dropped (or, for Motor, returned to the pool): bounded.
        connections = await settle(
            lambda: count_connections(kind, server), lambda count: count <= connection_limit
        )
        assert connections <= connection_limit, (
            f"{kind}: {connections_before} connections before the hang, {connections} after "
            f"outage {outage + 1}"
        )


async def settle(
    probe: Callable[[], Awaitable[_T]], ok: Callable[[_T], bool], seconds: float = 5.0
) -> _T:
    """Poll ``probe()`` until ``ok(result)`` or the timeout; return the last result.

    Closing a dropped connection and ending a cancelled task take a few loop turns, and
    after a freeze the server itself notices closed connections only once it runs again.
    """
    deadline = time.monotonic() + seconds
    while True:
        result = await probe()
        if ok(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def stray_tasks(before: set[asyncio.Task[Any]]) -> list[str]:
    """Tasks that appeared since ``before`` and still run, except the test's own."""
    stray = []
    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task in before or task is current or task.done():
            continue
        # aiohttp's server runs one task per open client connection (keep-alive): those
        # belong to the test client's connection pool, not to the session layer.
        if task.get_coro().__qualname__ == "RequestHandler.start":  # type: ignore[union-attr]
            continue
        stray.append(repr(task))
    return stray


async def count_connections(kind: str, server: ServerHandle) -> int:
    """Client connections the server has open now (not counting the one asking)."""
    if kind in ("redis", "valkey"):
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(server.url)
        try:
            return len(await client.client_list()) - 1
        finally:
            await client.aclose()
    if kind == "sql-mariadb":
        import asyncmy

        url = urlsplit(server.url)
        connection = await asyncmy.connect(
            host=url.hostname, port=url.port, user=url.username or "root",
            password=url.password or "", connect_timeout=5,
        )  # fmt: skip
        try:
            async with connection.cursor() as cursor:
                await cursor.execute(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                    "WHERE ID <> CONNECTION_ID() AND COMMAND <> 'Daemon'"
                )
                row = await cursor.fetchone()
            return int(row[0])
        finally:
            connection.close()
    if kind in ("postgres", "sql-postgres"):
        import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

        connection = await asyncpg.connect(server.url)
        try:
            count: int = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return count
        finally:
            await connection.close()
    # FerretDB has no connection list; count established TCP connections to its port (the
    # test process is the only client of this throwaway server).
    port = urlsplit(server.url).port
    assert port is not None
    return established_connections_to(port)


def established_connections_to(port: int) -> int:
    """Established TCP connections whose remote end is ``port`` (Linux /proc/net)."""
    established = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == "01":  # 01: ESTABLISHED
                    established += 1
    return established
