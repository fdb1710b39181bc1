"""Fixtures: every store on a real backend, a store-call counter, a fake clock, app helpers."""

from __future__ import annotations

import itertools
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http.cookies import SimpleCookie
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import aiohttp_sessionkit.session as session_module
from aiohttp_sessionkit import (
    AbstractStore,
    AbstractTransport,
    CookieTransport,
    EncryptedCookieStore,
    HeaderTransport,
    MemoryStore,
    ServerStore,
    Session,
    generate_key,
)
from aiohttp_sessionkit.serializers import Serializer
from tests.harness.cluster_servers import (  # noqa: F401 - server fixtures of the scale-out tests
    postgres_pair_factory,
    redis_cluster_servers,
    redis_sentinel_servers,
)
from tests.harness.servers import (  # noqa: F401 - session-scoped server fixtures
    mariadb_server,
    memcached_server,
    mongo_server,
    postgres_server,
    redis_server,
    valkey_server,
)

#: jwt: HS256, no revocation; jwt-revoke: EdDSA with a MemoryStore deny list;
#: jwt-revoke-redis: ES256 with a deny list on the real Redis.
JWT_STORE_KINDS = ["jwt", "jwt-revoke", "jwt-revoke-redis"]
#: cookie: no deny list; cookie-revoke: a MemoryStore deny list; cookie-revoke-redis: a deny
#: list on the real Redis.
COOKIE_STORE_KINDS = ["cookie", "cookie-revoke", "cookie-revoke-redis"]
CLIENT_SIDE_STORE_KINDS = [*COOKIE_STORE_KINDS, *JWT_STORE_KINDS]
STORE_KINDS = [
    "memory",
    *COOKIE_STORE_KINDS,
    "redis",
    "redis-cluster",
    "valkey",
    "memcached",
    "postgres",
    "mongo",
    "motor",
    "sql-sqlite",
    "sql-mariadb",
    "sql-postgres",
    *JWT_STORE_KINDS,
]
SERVER_STORE_KINDS = [k for k in STORE_KINDS if k not in CLIENT_SIDE_STORE_KINDS]
#: Client-side stores with a deny list: their logout kills every copy of the token, and they
#: end a user's sessions by a per-user cutoff.
DENY_LIST_STORE_KINDS = ["cookie-revoke", "cookie-revoke-redis", "jwt-revoke", "jwt-revoke-redis"]
#: Stores whose logout kills every copy of the token.
REVOCABLE_STORE_KINDS = [*SERVER_STORE_KINDS, *DENY_LIST_STORE_KINDS]
_unique = itertools.count()

#: SESSIONKIT_TEST_SERVERS=none runs only what needs no server process of its own: the
#: memory, cookie, JWT (in-process deny list) and SQLite stores. scripts/test.sh runs the
#: suites of the other supported Python versions so; the main run always has every server.
SERVER_FREE_STORE_KINDS = frozenset(
    {"memory", "cookie", "cookie-revoke", "jwt", "jwt-revoke", "sql-sqlite"}
)
_SERVER_FIXTURES = frozenset({
    "redis_server", "postgres_server", "mariadb_server", "mongo_server", "memcached_server",
    "redis_cluster_servers", "redis_sentinel_servers", "postgres_pair_factory",
})  # fmt: skip


def _needs_a_server(item: pytest.Item) -> bool:
    if item.get_closest_marker("servers") or _SERVER_FIXTURES & set(
        getattr(item, "fixturenames", ())
    ):
        return True
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    return any(
        name.endswith("store_factory") and kind not in SERVER_FREE_STORE_KINDS
        for name, kind in params.items()
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mode = os.environ.get("SESSIONKIT_TEST_SERVERS", "all")
    if mode not in ("all", "none"):
        raise pytest.UsageError(f'SESSIONKIT_TEST_SERVERS must be "all" or "none", not {mode!r}')
    if mode == "all":
        return
    dropped = [item for item in items if _needs_a_server(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not _needs_a_server(item)]


class CountingStore(AbstractStore):
    """Wraps a real store and counts the calls the session layer makes to it."""

    def __init__(self, inner: AbstractStore) -> None:
        self.inner = inner
        object.__setattr__(self, "client_side", inner.client_side)
        object.__setattr__(self, "local", inner.local)
        object.__setattr__(self, "session_class", inner.session_class)
        self.loads = 0
        self.saves = 0
        self.deletes = 0

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def purge_expired(self) -> int:
        return await self.inner.purge_expired()

    @property
    def revocable(self) -> bool:
        return self.inner.revocable

    def dump(self, session: Session, serializer: Serializer, accessed: int) -> Any:
        return self.inner.dump(session, serializer, accessed)

    def restore(self, payload: Any, serializer: Serializer, **timeouts: Any) -> Session | None:
        return self.inner.restore(payload, serializer, **timeouts)

    async def load(self, token: str, *, namespace: str) -> Any | None:
        self.loads += 1
        return await self.inner.load(token, namespace=namespace)

    async def save(self, token: str | None, data: Any, *, ttl: int, namespace: str) -> str | None:
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
        self.client_side = kind in CLIENT_SIDE_STORE_KINDS
        #: Whether a logout kills copies of the token (False: an old copy still opens).
        self.revocable = kind in REVOCABLE_STORE_KINDS

    def __call__(self) -> AbstractStore:
        store = self._build()
        self.built.append(store)
        return store


def _redis_factory(url: str) -> Callable[[], AbstractStore]:
    from aiohttp_sessionkit.stores.redis import RedisStore

    prefix = f"t{next(_unique)}-{uuid.uuid4().hex[:8]}:"
    return lambda: RedisStore(url, key_prefix=prefix)


def _memcached_factory(url: str) -> Callable[[], AbstractStore]:
    from aiohttp_sessionkit.stores.memcached import MemcachedStore

    prefix = f"t{next(_unique)}-{uuid.uuid4().hex[:8]}:"
    return lambda: MemcachedStore(url, key_prefix=prefix)


def _redis_cluster_factory(servers: Any, clients: list[Any]) -> Callable[[], AbstractStore]:
    """RedisStores on the six-node cluster, each with its own (borrowed) RedisCluster client."""
    from aiohttp_sessionkit.stores.redis import RedisStore
    from tests.harness.cluster_servers import cluster_client

    prefix = f"t{next(_unique)}-{uuid.uuid4().hex[:8]}:"

    def build() -> AbstractStore:
        client = cluster_client(servers)
        clients.append(client)  # borrowed by the store: the test closes it
        return RedisStore(client, key_prefix=prefix)

    return build


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


def _jwt_factory(kind: str, request: pytest.FixtureRequest) -> Callable[[], AbstractStore]:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from aiohttp_sessionkit.stores.jwt import JWTStore

    if kind == "jwt":
        secret = secrets.token_bytes(32)
        return lambda: JWTStore(secret)
    if kind == "jwt-revoke":
        ed_key = Ed25519PrivateKey.generate()
        deny_list = MemoryStore()  # one process, one memory: shared by every store built
        return lambda: JWTStore(ed_key, algorithm="EdDSA", revocation=deny_list)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    build_redis = _redis_factory(request.getfixturevalue("redis_server").url)
    return lambda: JWTStore(ec_key, algorithm="ES256", revocation=cast(ServerStore, build_redis()))


def _cookie_factory(kind: str, request: pytest.FixtureRequest) -> Callable[[], AbstractStore]:
    key = generate_key()
    if kind == "cookie":
        return lambda: EncryptedCookieStore(key)
    if kind == "cookie-revoke":
        deny_list = MemoryStore()  # one process, one memory: shared by every store built
        return lambda: EncryptedCookieStore(key, revocation=deny_list)
    build_redis = _redis_factory(request.getfixturevalue("redis_server").url)
    return lambda: EncryptedCookieStore(key, revocation=cast(ServerStore, build_redis()))


async def _factory(request: pytest.FixtureRequest, kind: str) -> AsyncIterator[StoreFactory]:
    motor_clients: list[Any] = []
    cluster_clients: list[Any] = []
    build: Callable[[], AbstractStore]
    if kind == "memory":
        shared = MemoryStore()
        build = lambda: shared  # noqa: E731 - one process, one memory
    elif kind in COOKIE_STORE_KINDS:
        build = _cookie_factory(kind, request)
    elif kind == "redis":
        build = _redis_factory(request.getfixturevalue("redis_server").url)
    elif kind in JWT_STORE_KINDS:
        build = _jwt_factory(kind, request)
    elif kind == "redis-cluster":
        servers = request.getfixturevalue("redis_cluster_servers")
        build = _redis_cluster_factory(servers, cluster_clients)
    elif kind == "valkey":  # RedisStore on Valkey
        build = _redis_factory(request.getfixturevalue("valkey_server").url)
    elif kind == "memcached":
        build = _memcached_factory(request.getfixturevalue("memcached_server").url)
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
    for cluster in cluster_clients:
        await cluster.aclose()


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


@pytest.fixture(params=REVOCABLE_STORE_KINDS)
async def revocable_store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Like ``store_factory``, for the stores whose logout kills every copy of the token."""
    async for factory in _factory(request, request.param):
        yield factory


@pytest.fixture(params=DENY_LIST_STORE_KINDS)
async def deny_list_store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Like ``store_factory``, for the client-side stores with a deny list (revocation=)."""
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

COOKIE = "AIOHTTP_SESSION"
TRANSPORT_KINDS = ["cookie", "header"]


class Wire:
    """How a test client presents a token and reads new ones, for one transport.

    Tests written against a ``Wire`` run unchanged over the cookie and the header transport.
    """

    def __init__(self, kind: str, name: str = COOKIE) -> None:
        self.kind = kind
        self.name = name
        self.transport: AbstractTransport = (
            CookieTransport() if kind == "cookie" else HeaderTransport()
        )
        self.vary = self.transport.vary

    @property
    def options(self) -> dict[str, Any]:
        """Keyword options for ``setup()``."""
        return {"transport": self.transport}

    def present(self, token: str | None) -> dict[str, str]:
        """Request headers that present ``token`` (none for ``None``)."""
        if token is None:
            return {}
        if self.kind == "cookie":
            return {"Cookie": f"{self.name}={token}"}
        return {"Authorization": f"Bearer {token}"}

    def issued(self, response: Any) -> str | None:
        """The new token this response hands the client, or None (none, or a deletion)."""
        if self.kind == "cookie":
            morsel = set_cookies(response).get(self.name)
            return None if morsel is None or not morsel.value else str(morsel.value)
        assert "Set-Cookie" not in response.headers, "the header transport sent a cookie"
        values: list[str] = response.headers.getall("Session-Token", [])
        assert len(values) <= 1
        return values[0] if values and values[0] else None

    def cleared(self, response: Any) -> bool:
        """True when the response tells the client to drop its token."""
        if self.kind == "cookie":
            morsel = set_cookies(response).get(self.name)
            return morsel is not None and morsel.value == "" and str(morsel["max-age"]) == "0"
        values: list[str] = response.headers.getall("Session-Token", [])
        return values == [""]

    def follow(self, response: Any, token: str | None) -> str | None:
        """The token to present next: a newly issued one, nothing after a clear, else the same."""
        issued = self.issued(response)
        if issued is not None:
            return issued
        return None if self.cleared(response) else token

    def __repr__(self) -> str:
        return self.kind


@pytest.fixture(params=TRANSPORT_KINDS)
def wire(request: pytest.FixtureRequest) -> Wire:
    """Each transport (parametrized): the cookie and the Authorization header."""
    return Wire(request.param)
