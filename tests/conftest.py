"""Fixtures: every store on a real backend, a store-call counter, a fake clock, app helpers."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http.cookies import SimpleCookie
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from servers import (  # noqa: F401 - session-scoped server fixtures
    mariadb_server,
    mongo_server,
    postgres_server,
    redis_server,
)

import aiohttp_sessionkit.session as session_module
from aiohttp_sessionkit import AbstractStore, EncryptedCookieStore, MemoryStore, generate_key

STORE_KINDS = [
    "memory",
    "cookie",
    "redis",
    "postgres",
    "mongo",
    "motor",
    "sql-sqlite",
    "sql-mariadb",
    "sql-postgres",
]
SERVER_STORE_KINDS = [k for k in STORE_KINDS if k != "cookie"]
_unique = itertools.count()


class CountingStore(AbstractStore):
    """Wraps a real store and counts the calls the session layer makes to it."""

    def __init__(self, inner: AbstractStore) -> None:
        self.inner = inner
        object.__setattr__(self, "client_side", inner.client_side)
        object.__setattr__(self, "local", inner.local)
        self.loads = 0
        self.saves = 0
        self.deletes = 0

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def purge_expired(self) -> int:
        return await self.inner.purge_expired()

    async def load(self, token: str, *, namespace: str) -> bytes | None:
        self.loads += 1
        return await self.inner.load(token, namespace=namespace)

    async def save(self, token: str | None, data: bytes, *, ttl: int, namespace: str) -> str | None:
        self.saves += 1
        return await self.inner.save(token, data, ttl=ttl, namespace=namespace)

    async def delete(self, token: str, *, namespace: str) -> None:
        self.deletes += 1
        await self.inner.delete(token, namespace=namespace)

    @property
    def calls(self) -> int:
        return self.loads + self.saves + self.deletes


class StoreFactory:
    """Builds fresh stores of one kind that share one backend namespace (table, prefix...)."""

    def __init__(self, kind: str, build: Callable[[], AbstractStore]) -> None:
        self.kind = kind
        self._build = build
        self.built: list[AbstractStore] = []
        self.client_side = kind == "cookie"

    def __call__(self) -> AbstractStore:
        store = self._build()
        self.built.append(store)
        return store


def _redis_factory(url: str) -> Callable[[], AbstractStore]:
    from aiohttp_sessionkit.stores.redis import RedisStore

    prefix = f"t{next(_unique)}-{uuid.uuid4().hex[:8]}:"
    return lambda: RedisStore(url, key_prefix=prefix)


def _postgres_factory(dsn: str) -> Callable[[], AbstractStore]:
    from aiohttp_sessionkit.stores.postgres import PostgresStore

    table = f"sessions_{next(_unique)}_{uuid.uuid4().hex[:8]}"
    return lambda: PostgresStore(dsn, table=table)


def _sql_factory(request: pytest.FixtureRequest, kind: str) -> Callable[[], AbstractStore]:
    """SQLAlchemyStore on a temp SQLite file, the test MariaDB or the test PostgreSQL."""
    from aiohttp_sessionkit.stores.sql import SQLAlchemyStore

    if kind == "sql-sqlite":
        url = f"sqlite+aiosqlite:///{request.getfixturevalue('tmp_path')}/sessions.db"
    elif kind == "sql-mariadb":
        url = request.getfixturevalue("mariadb_server").url
    else:
        dsn = request.getfixturevalue("postgres_server").url
        url = "postgresql+asyncpg://" + dsn.split("://", 1)[1]
    table = f"sessions_{next(_unique)}_{uuid.uuid4().hex[:8]}"
    return lambda: SQLAlchemyStore(url, table=table)


def _mongo_factory(url: str, driver: str, motor_clients: list[Any]) -> Callable[[], AbstractStore]:
    from aiohttp_sessionkit.stores.mongo import MongoStore

    collection = f"sessions_{next(_unique)}_{uuid.uuid4().hex[:8]}"
    if driver == "pymongo":
        return lambda: MongoStore(url, database="sessionkit_test", collection=collection)

    def motor_store() -> AbstractStore:
        from motor.motor_asyncio import AsyncIOMotorClient

        client: Any = AsyncIOMotorClient(url, serverSelectionTimeoutMS=5000)
        motor_clients.append(client)  # borrowed by the store: the test closes it
        return MongoStore(client, database="sessionkit_test", collection=collection)

    return motor_store


async def _factory(request: pytest.FixtureRequest, kind: str) -> AsyncIterator[StoreFactory]:
    motor_clients: list[Any] = []
    build: Callable[[], AbstractStore]
    if kind == "memory":
        shared = MemoryStore()
        build = lambda: shared  # noqa: E731 - one process, one memory
    elif kind == "cookie":
        key = generate_key()
        build = lambda: EncryptedCookieStore(key)  # noqa: E731
    elif kind == "redis":
        build = _redis_factory(request.getfixturevalue("redis_server").url)
    elif kind == "postgres":
        build = _postgres_factory(request.getfixturevalue("postgres_server").url)
    elif kind.startswith("sql-"):
        build = _sql_factory(request, kind)
    else:
        server = request.getfixturevalue("mongo_server")
        build = _mongo_factory(server.url, "pymongo" if kind == "mongo" else "motor", motor_clients)
    factory = StoreFactory(kind, build)
    yield factory
    for store in factory.built:
        await store.close()
    for client in motor_clients:
        client.close()


@pytest.fixture(params=STORE_KINDS)
async def store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """A factory of stores of each kind, on a real backend; stores are closed afterwards."""
    async for factory in _factory(request, request.param):
        yield factory


@pytest.fixture(params=SERVER_STORE_KINDS)
async def server_store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Like ``store_factory``, for the stores that keep sessions on a server."""
    async for factory in _factory(request, request.param):
        yield factory


@pytest.fixture
def store(store_factory: StoreFactory) -> AbstractStore:
    """One store of each kind (parametrized)."""
    return store_factory()


class FakeClock:
    """Replaces the session layer's clock; ``advance`` moves time forward."""

    def __init__(self) -> None:
        self.now = 1_800_000_000

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    fake = FakeClock()
    import time

    fake.now = int(time.time())
    monkeypatch.setattr(session_module, "now", fake)
    from aiohttp_sessionkit import middleware

    monkeypatch.setattr(middleware, "now", fake)
    yield fake


def set_cookies(response: Any) -> dict[str, Any]:
    """The Set-Cookie headers of a response, parsed, by cookie name."""
    parsed: dict[str, Any] = {}
    for header in response.headers.getall("Set-Cookie", []):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        for name, morsel in cookie.items():
            parsed[name] = morsel
    return parsed


def raw_set_cookies(response: Any) -> list[str]:
    return list(response.headers.getall("Set-Cookie", []))


AppClient = TestClient[web.Request, web.Application]
