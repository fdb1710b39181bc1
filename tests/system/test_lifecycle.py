"""Stores open and close with the app, purges run in the background, examples work."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aiohttp_sessionkit import MemoryStore, generate_key, get_session, setup
from examples import cookie_app, mongo_app, postgres_app, redis_app, sql_app


class LifecycleStore(MemoryStore):
    """A real MemoryStore that records the lifecycle calls it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    async def open(self) -> None:
        self.events.append("open")

    async def close(self) -> None:
        self.events.append("close")

    async def purge_expired(self) -> int:
        self.events.append("purge")
        return await super().purge_expired()


async def test_store_opens_on_startup_and_closes_on_cleanup_once_when_shared() -> None:
    store = LifecycleStore()
    app = web.Application()
    setup(app, store)
    setup(app, store, cookie_name="second")
    assert store.events == []  # setup itself does no I/O
    server = TestServer(app)
    await server.start_server()
    assert store.events == ["open"]
    await server.close()
    assert store.events == ["open", "close"]


async def test_background_purge_runs_periodically_and_stops_on_shutdown() -> None:
    store = LifecycleStore()
    app = web.Application()
    setup(app, store, purge_interval=0.02)
    server = TestServer(app)
    await server.start_server()
    await asyncio.sleep(0.2)
    await server.close()
    purges = store.events.count("purge")
    assert purges >= 3
    assert store.events[-1] == "close"
    await asyncio.sleep(0.1)
    assert store.events.count("purge") == purges  # nothing runs after cleanup


async def test_failing_purge_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    class FlakyPurge(LifecycleStore):
        async def purge_expired(self) -> int:
            self.events.append("purge")
            raise RuntimeError("database said no")

    store = FlakyPurge()
    app = web.Application()
    setup(app, store, purge_interval=0.02)
    server = TestServer(app)
    await server.start_server()
    await asyncio.sleep(0.15)
    await server.close()
    assert store.events.count("purge") >= 2
    assert any("purging expired sessions" in r.getMessage() for r in caplog.records)


async def test_session_middleware_alone_works_without_startup_hooks(aiohttp_client: Any) -> None:
    from aiohttp_sessionkit import session_middleware

    async def handler(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["n"] = session.get("n", 0) + 1
        return web.Response(text=str(session["n"]))

    app = web.Application(middlewares=[session_middleware(MemoryStore())])
    app.router.add_get("/", handler)
    client = await aiohttp_client(app)
    assert await (await client.get("/")).text() == "1"
    assert await (await client.get("/")).text() == "2"


async def count_twice(aiohttp_client: Any, app: web.Application) -> None:
    client = await aiohttp_client(app)
    first = await (await client.get("/")).text()
    second = await (await client.get("/")).text()
    assert first.startswith("visits: 1") and second.startswith("visits: 2")


async def test_redis_example(aiohttp_client: Any, redis_server: Any) -> None:
    await count_twice(aiohttp_client, redis_app.make_app(redis_server.url))


async def test_postgres_example(aiohttp_client: Any, postgres_server: Any) -> None:
    await count_twice(aiohttp_client, postgres_app.make_app(postgres_server.url))


@pytest.mark.parametrize("dialect", ["sqlite", "mariadb"])
async def test_sql_example(
    aiohttp_client: Any, request: pytest.FixtureRequest, tmp_path: Path, dialect: str
) -> None:
    if dialect == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/sessions.db"
    else:
        url = request.getfixturevalue("mariadb_server").url
        # The example's table names are fixed: start from a database without them.
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(sql_app.metadata.drop_all)
        await engine.dispose()
    await count_twice(aiohttp_client, sql_app.make_app(url))


async def test_mongo_example(aiohttp_client: Any, mongo_server: Any) -> None:
    await count_twice(aiohttp_client, mongo_app.make_app(mongo_server.url))


async def test_cookie_example_with_rotated_keys(aiohttp_client: Any) -> None:
    await count_twice(aiohttp_client, cookie_app.make_app([generate_key(), generate_key()]))


@pytest.mark.parametrize("scheme", ["redis", "valkey", "memcached", "postgres", "mongo", "mariadb"])
async def test_setup_with_a_store_url_serves_sessions(
    aiohttp_client: Any, request: pytest.FixtureRequest, scheme: str
) -> None:
    url = request.getfixturevalue(f"{scheme}_server").url
    app = web.Application()
    setup(app, url)

    async def handler(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["n"] = session.get("n", 0) + 1
        return web.Response(text=str(session["n"]))

    app.router.add_get("/", handler)
    client = await aiohttp_client(app)
    assert await (await client.get("/")).text() == "1"
    assert await (await client.get("/")).text() == "2"
