"""The throwaway test servers themselves (servers.py): real protocol answers, stop and start."""

from __future__ import annotations

import gc
import re
import socket
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import pymongo
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from pymongo.errors import ConnectionFailure

from tests.harness import servers

# -- one real round trip per protocol: write a value, read it back


async def redis_write(url: str, key: str, value: str) -> None:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        assert await client.set(key, value) is True
    finally:
        await client.aclose()


async def redis_read(url: str, key: str) -> str | None:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2, decode_responses=True)
    try:
        value = await client.get(key)
        assert value is None or isinstance(value, str)
        return value
    finally:
        await client.aclose()


async def postgres_write(url: str, key: str, value: str) -> None:
    conn = await asyncpg.connect(url, timeout=2)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v text)")
        await conn.execute("INSERT INTO kv VALUES ($1, $2)", key, value)
    finally:
        await conn.close()


async def postgres_read(url: str, key: str) -> str | None:
    conn = await asyncpg.connect(url, timeout=2)
    try:
        value: str | None = await conn.fetchval(
            "SELECT v FROM kv WHERE k = $1 AND current_database() = 'sessionkit_test'", key
        )
        return value
    finally:
        await conn.close()


def mongo_client(url: str) -> pymongo.AsyncMongoClient[dict[str, Any]]:
    return pymongo.AsyncMongoClient(url, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000)


async def mongo_write(url: str, key: str, value: str) -> None:
    client = mongo_client(url)
    try:
        await client.sessionkit_test.kv.insert_one({"_id": key, "v": value})
    finally:
        await client.close()


async def mongo_read(url: str, key: str) -> str | None:
    client = mongo_client(url)
    try:
        found = await client.sessionkit_test.kv.find_one({"_id": key})
        return None if found is None else str(found["v"])
    finally:
        await client.close()


Write = Callable[[str, str, str], Awaitable[None]]
Read = Callable[[str, str], Awaitable[str | None]]

KINDS: dict[str, tuple[Write, Read, type[BaseException]]] = {
    "redis_server": (redis_write, redis_read, redis.exceptions.ConnectionError),
    "postgres_server": (postgres_write, postgres_read, OSError),
    "mongo_server": (mongo_write, mongo_read, ConnectionFailure),
}


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(kind: str, request: pytest.FixtureRequest) -> Iterator[servers.ServerHandle]:
    handle: servers.ServerHandle = request.getfixturevalue(kind)
    yield handle
    if not handle.external and not handle.is_running:
        handle.start()  # a failed fault test must not leave the session's server down


def local(handle: servers.ServerHandle) -> servers.LocalServer:
    if handle.external:
        pytest.skip("external server")
    assert isinstance(handle, servers.LocalServer)
    return handle


# -- the servers answer


async def test_each_server_stores_and_returns_a_value(kind: str, server: Any) -> None:
    write, read, _ = KINDS[kind]
    key = uuid.uuid4().hex
    await write(server.url, key, "hello")
    assert await read(server.url, key) == "hello"
    assert await read(server.url, uuid.uuid4().hex) is None


async def test_postgres_url_points_at_the_test_database(postgres_server: Any) -> None:
    conn = await asyncpg.connect(postgres_server.url, timeout=2)
    try:
        assert await conn.fetchval("SELECT current_database()") == "sessionkit_test"
    finally:
        await conn.close()


async def test_mongo_server_is_the_pinned_ferretdb(mongo_server: Any) -> None:
    if mongo_server.external:
        pytest.skip("external server")
    client = mongo_client(mongo_server.url)
    try:
        info = await client.admin.command("buildInfo")
    finally:
        await client.close()
    assert info["ferretdbVersion"] == "v1.24.2"


def test_urls_name_the_loopback_port_the_server_listens_on(kind: str, server: Any) -> None:
    own = local(server)
    assert f"127.0.0.1:{own.port}/" in own.url
    assert servers.port_accepts(own.port)


# -- stop, start, restart: same port, same data


async def assert_unreachable(kind: str, read: Read, url: str) -> None:
    _, _, down_error = KINDS[kind]
    with warnings.catch_warnings():
        if kind == "mongo_server":
            # pymongo's async monitor leaks the socket of a connect attempt that close()
            # cancels (it closes it on OSError/TimeoutError only); the socket lives as long as
            # the error we catch here, so drop both before the warning can fire elsewhere.
            warnings.simplefilter("ignore", ResourceWarning)
        try:
            await read(url, uuid.uuid4().hex)
        except down_error:
            failed = True
        else:
            failed = False
        gc.collect()
    assert failed, f"{url} still answers"


@pytest.mark.slow
async def test_stop_refuses_connections_and_start_brings_the_server_back(
    kind: str, server: Any
) -> None:
    own = local(server)
    write, read, _ = KINDS[kind]
    url, key = own.url, uuid.uuid4().hex
    await write(url, key, "kept")

    began = time.monotonic()
    own.stop()
    assert time.monotonic() - began < 5  # graceful, not the kill after the timeout
    # (a tuple, so that mypy does not narrow is_running to False for the rest of the test)
    assert (own.is_running, servers.port_accepts(own.port)) == (False, False)
    await assert_unreachable(kind, read, url)
    own.stop()  # stopping twice is harmless

    own.start()
    assert own.is_running
    assert own.url == url
    expected = None if kind == "redis_server" else "kept"  # redis runs without persistence
    assert await read(url, key) == expected


async def hold_redis(url: str) -> Callable[[], Awaitable[None]]:
    client = aioredis.Redis.from_url(url)
    await client.ping()
    return client.aclose


async def hold_postgres(url: str) -> Callable[[], Awaitable[None]]:
    conn = await asyncpg.connect(url, timeout=2)
    await conn.fetchval("SELECT 1")
    close: Callable[[], Awaitable[None]] = conn.close
    return close


async def hold_mongo(url: str) -> Callable[[], Awaitable[None]]:
    client = mongo_client(url)
    await client.admin.command("ping")
    return client.close


HOLD: dict[str, Callable[[str], Awaitable[Callable[[], Awaitable[None]]]]] = {
    "redis_server": hold_redis,
    "postgres_server": hold_postgres,
    "mongo_server": hold_mongo,
}
# FerretDB gives connected clients 3 seconds to leave before it stops.
RESTART_SECONDS = {"redis_server": 2.0, "postgres_server": 2.0, "mongo_server": 5.0}


@pytest.mark.slow
async def test_restart_with_a_client_connected_keeps_port_and_data(kind: str, server: Any) -> None:
    own = local(server)
    write, read, _ = KINDS[kind]
    url, key = own.url, uuid.uuid4().hex
    await write(url, key, "kept")
    close_held = await HOLD[kind](url)  # an open client must not keep the old server alive
    try:
        began = time.monotonic()
        own.restart()
        assert time.monotonic() - began < RESTART_SECONDS[kind]
    finally:
        await close_held()
    assert own.is_running
    assert own.url == url
    await write(url, uuid.uuid4().hex, "new")
    expected = None if kind == "redis_server" else "kept"
    assert await read(url, key) == expected


def test_first_start_moves_off_a_port_taken_meanwhile() -> None:
    server = servers.RedisServer()
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", server.port))
            taken.listen()
            server.start()
            assert server.port != taken.getsockname()[1]
            assert server.url == f"redis://127.0.0.1:{server.port}/0"
            assert servers.port_accepts(server.port)
    finally:
        server.close()
    assert not server.is_running
    assert not server.base_dir.exists()


def test_a_cluster_nodes_first_start_moves_off_a_bus_port_taken_meanwhile() -> None:
    from tests.harness.cluster_servers import ClusterNode

    node = ClusterNode()
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", node.bus_port))
            taken.listen()
            node.start()
            assert node.bus_port != taken.getsockname()[1]
            assert servers.port_accepts(node.port) and servers.port_accepts(node.bus_port)
    finally:
        node.close()
    assert not node.is_running


def test_a_restart_that_cannot_listen_fails_with_the_server_log() -> None:
    with servers.RedisServer() as server:
        server.stop()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", server.port))
            taken.listen()
            with pytest.raises(
                servers.PortInUseError, match=r"(?s)exited with code.*already in use"
            ):
                server.start()
        assert not server.is_running
        server.start()  # the port is free again
        assert servers.port_accepts(server.port)


# -- external servers and missing binaries


def serve_mongo(monkeypatch: pytest.MonkeyPatch, **env: str | None) -> servers.ServerHandle:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return next(servers.serve("SESSIONKIT_TEST_MONGO_URL", servers.FerretServer))


def test_an_external_server_is_used_as_is_and_cannot_be_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle = serve_mongo(monkeypatch, SESSIONKIT_TEST_MONGO_URL="mongodb://db.example:27017/")
    assert handle.url == "mongodb://db.example:27017/"
    assert handle.external
    for action in (handle.stop, handle.start, handle.restart):
        with pytest.raises(pytest.skip.Exception, match="external server"):
            action()


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [("true", pytest.fail.Exception), ("1", pytest.fail.Exception), (None, pytest.skip.Exception),
     ("false", pytest.skip.Exception)],
)  # fmt: skip
def test_a_missing_binary_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str | None, outcome: type[BaseException]
) -> None:
    with pytest.raises(outcome, match=re.escape("scripts/install-test-deps.sh")):
        serve_mongo(
            monkeypatch,
            SESSIONKIT_TEST_MONGO_URL=None,
            SESSIONKIT_FERRETDB_BIN="/nonexistent/ferretdb",
            CI=ci,
        )
