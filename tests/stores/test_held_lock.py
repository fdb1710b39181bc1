"""Writes that wait on a lock held elsewhere: a 503 in time, no pile-up, and nothing lands later.

Another client of the database (a migration, an admin's open transaction) holds the
session rows locked. Every write of a session then waits for that lock, the session layer
answers 503 when ``store_timeout`` runs out, and the statement must not go on waiting on
the server: it would hold a backend (the pool replacing each abandoned connection until
``max_connections``), and it would commit the write its client was told had failed as
soon as the lock is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from aiohttp_sessionkit import AbstractStore, ServerStore, StoreUnavailable, setup
from aiohttp_sessionkit.ids import new_session_id, record_key
from aiohttp_sessionkit.stores._db import SERVER_SHARE
from tests.conftest import StoreFactory
from tests.harness.servers import ServerHandle
from tests.stores.test_contract import COOKIE_WIRE, build_app, client_for, login, read, with_cookie
from tests.stores.test_faults import SERVER_FIXTURE, count_connections

pytestmark = pytest.mark.slow

LOCK_KINDS = ["postgres", "sql-postgres", "sql-mariadb"]
STORE_TIMEOUT = 1.0
#: Requests fired while the lock is held, one every INTERVAL seconds (20 a second).
REQUESTS = 40
INTERVAL = 0.05
SESSIONS = 4
#: The store's pool (10 connections), the lock holder, and two for what comes and goes
#: (a cancel's own short connection, the count's).
BACKEND_LIMIT = 13


@pytest.fixture
def database(server_store_factory: StoreFactory, request: pytest.FixtureRequest) -> ServerHandle:
    """The database server behind this test's store."""
    handle: ServerHandle = request.getfixturevalue(SERVER_FIXTURE[server_store_factory.kind])
    return handle


def _table(kind: str, store: AbstractStore) -> str:
    """The store's table, quoted for the SQL the lock holder sends."""
    sql_table = getattr(store, "table", None)
    if sql_table is not None:
        return f"`{sql_table.name}`" if kind == "sql-mariadb" else f'"{sql_table.name}"'
    qualified: str = store._qualified  # type: ignore[attr-defined]  # PostgresStore's own
    return qualified


@contextlib.asynccontextmanager
async def rows_locked(kind: str, database: ServerHandle, table: str) -> AsyncIterator[None]:
    """Every row of ``table`` locked FOR UPDATE by a transaction of another client."""
    if kind == "sql-mariadb":
        import asyncmy

        url = urlsplit(database.url)
        connection = await asyncmy.connect(
            host=url.hostname, port=url.port, user=url.username or "root",
            password=url.password or "", database=url.path.lstrip("/"), connect_timeout=5,
        )  # fmt: skip
        try:
            async with connection.cursor() as cursor:
                await cursor.execute("BEGIN")
                await cursor.execute(f"SELECT 1 FROM {table} FOR UPDATE")  # noqa: S608
                yield
                await cursor.execute("ROLLBACK")
        finally:
            connection.close()
        return
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

    pg = await asyncpg.connect(database.url)
    try:
        transaction = pg.transaction()
        await transaction.start()
        await pg.execute(f"SELECT 1 FROM {table} FOR UPDATE")  # noqa: S608
        yield
        await transaction.rollback()
    finally:
        await pg.close()


@contextlib.asynccontextmanager
async def borrowing_store(kind: str, database: ServerHandle) -> AsyncIterator[AbstractStore]:
    """A store on the application's own pool or engine (10 connections), left as the
    application configured it: no server-side time limit, only the store's cancel."""
    table = f"borrowed_{uuid.uuid4().hex[:12]}"
    if kind == "postgres":
        import asyncpg

        from aiohttp_sessionkit.stores.postgres import PostgresStore

        pool = await asyncpg.create_pool(database.url, min_size=1, max_size=10)
        try:
            yield PostgresStore(pool, table=table)
        finally:
            await pool.close()
        return
    from sqlalchemy.ext.asyncio import create_async_engine

    from aiohttp_sessionkit.stores.sql import SQLAlchemyStore

    url = database.url
    if kind == "sql-postgres":
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    engine = create_async_engine(url, pool_size=10, max_overflow=0)
    try:
        yield SQLAlchemyStore(engine, table=table)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("pool", ["own", "borrowed"])
@pytest.mark.parametrize("server_store_factory", LOCK_KINDS, indirect=True)
async def test_writes_behind_a_held_lock_answer_503_pile_up_nothing_and_never_land(
    aiohttp_client: Any, server_store_factory: StoreFactory, database: ServerHandle, pool: str
) -> None:
    kind = server_store_factory.kind
    async with contextlib.AsyncExitStack() as stack:
        if pool == "own":
            store = server_store_factory()
        else:
            store = await stack.enter_async_context(borrowing_store(kind, database))
            stack.push_async_callback(store.close)
        await writes_behind_a_held_lock(aiohttp_client, kind, store, database)


async def writes_behind_a_held_lock(
    aiohttp_client: Any, kind: str, store: AbstractStore, database: ServerHandle
) -> None:
    client = await client_for(
        aiohttp_client, build_app(store, COOKIE_WIRE, store_timeout=STORE_TIMEOUT)
    )
    cookies = [await login(client, COOKIE_WIRE, user=f"user{i}") for i in range(SESSIONS)]

    peak = 0
    firing = True

    async def watch_backends() -> None:
        nonlocal peak
        while firing:
            peak = max(peak, await count_connections(kind, database))
            await asyncio.sleep(0.1)

    async def overwrite(i: int) -> int:
        await asyncio.sleep(i * INTERVAL)
        response = await client.post(
            "/set/user/mallory", headers=with_cookie(cookies[i % SESSIONS])
        )
        await response.read()
        return int(response.status)

    async with rows_locked(kind, database, _table(kind, store)):
        watcher = asyncio.create_task(watch_backends())
        started = time.monotonic()
        statuses = await asyncio.gather(*(overwrite(i) for i in range(REQUESTS)))
        elapsed = time.monotonic() - started
        # Still locked: what the server is doing now is what was left behind.
        await asyncio.sleep(STORE_TIMEOUT)
        firing = False
        await watcher
        peak = max(peak, await count_connections(kind, database))

    assert statuses == [503] * REQUESTS
    # Each answer came within its budget (a load and a save, two store calls at most).
    assert elapsed < REQUESTS * INTERVAL + 2 * STORE_TIMEOUT + 1
    assert peak <= BACKEND_LIMIT, f"{kind}: {peak} backends while the lock was held"

    # The lock is gone: a write told 503 that was still waiting would land now.
    await asyncio.sleep(0.5)
    for i, cookie in enumerate(cookies):
        assert (await read(client, COOKIE_WIRE, cookie))["data"] == {"user": f"user{i}"}
    # And the store works again at once, over a pool that was not left exhausted.
    response = await client.post("/set/user/carol", headers=with_cookie(cookies[0]))
    assert response.status == 200
    assert (await read(client, COOKIE_WIRE, cookies[0]))["data"] == {"user": "carol"}


@pytest.mark.parametrize("server_store_factory", LOCK_KINDS, indirect=True)
async def test_the_server_itself_abandons_a_write_behind_a_lock_before_store_timeout(
    server_store_factory: StoreFactory, database: ServerHandle
) -> None:
    # Nothing cancels this call: only the limit the store gave its own connections does.
    kind = server_store_factory.kind
    store = server_store_factory()
    assert isinstance(store, ServerStore)
    setup(web.Application(), store, store_timeout=STORE_TIMEOUT)  # tells the store its budget
    await store.open()
    key = record_key("ns", new_session_id())
    assert await store.create(key, b"old", 60)

    finished: list[float] = []
    async with rows_locked(kind, database, _table(kind, store)):
        started = time.monotonic()
        write = asyncio.create_task(store.update(key, b"new", 60))
        write.add_done_callback(lambda _: finished.append(time.monotonic()))
        # The lock holder lets go at store_timeout: a write still waiting then would land.
        # (Ordered by the servers' own clocks, not by when this loaded process looks.)
        await asyncio.sleep(STORE_TIMEOUT)
    async with asyncio.timeout(3 * STORE_TIMEOUT):  # fail, rather than hang, without it
        with pytest.raises(StoreUnavailable):
            await write
    # It waited on the lock until the server's own limit ended it, before store_timeout.
    assert finished[0] - started >= SERVER_SHARE * STORE_TIMEOUT
    assert await store.get(key) == b"old"
