"""RedisStore against real redis-server processes (a plain server and a one-node cluster).

``redis_server`` is the session-scoped fixture from ``tests/harness/servers.py``, registered by
conftest.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio as aioredis

from aiohttp_sessionkit.exceptions import ConfigurationError, StoreUnavailable
from aiohttp_sessionkit.ids import new_session_id, record_key
from aiohttp_sessionkit.stores.redis import RedisStore
from tests.harness.cluster_servers import OneNodeCluster, _build
from tests.harness.servers import ServerHandle

NS = "AIOHTTP_SESSION"
KEY = "ab" * 32  # a record key in the shape ServerStore passes: 64 lowercase hex


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit(parts._replace(query=query))


def _with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


@pytest.fixture
def prefix() -> str:
    # The Redis server lives for the whole session; a prefix per test keeps tests apart.
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def raw(redis_server: ServerHandle) -> AsyncIterator[aioredis.Redis]:
    """A client of our own for looking behind the store's back."""
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def store(redis_server: ServerHandle, prefix: str) -> AsyncIterator[RedisStore]:
    s = RedisStore(redis_server.url, key_prefix=prefix)
    try:
        yield s
    finally:
        await s.close()


async def _keys(raw: aioredis.Redis, prefix: str) -> list[str]:
    return sorted([k.decode() async for k in raw.scan_iter(match=prefix + "*")])


async def _calls(raw: aioredis.Redis, command: str) -> int:
    stats: dict[str, Any] = await raw.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def _client_named(raw: aioredis.Redis, name: str) -> bool:
    clients: list[dict[str, Any]] = await raw.client_list()
    return any(c.get("name") == name for c in clients)


async def _wait_until_gone(raw: aioredis.Redis, name: str) -> bool:
    # The server notices a closed socket on its next event-loop turn, not instantly.
    for _ in range(50):
        if not await _client_named(raw, name):
            return True
        await asyncio.sleep(0.02)
    return False


# -- the public ServerStore API ------------------------------------------------------------


# -- create-only and update-only -------------------------------------------------------------


async def test_create_on_existing_key_returns_false_and_keeps_data(store: RedisStore) -> None:
    assert await store.create(KEY, b"original", 60) is True
    assert await store.create(KEY, b"intruder", 60) is False
    assert await store.get(KEY) == b"original"


async def test_update_on_missing_key_returns_false_and_creates_nothing(
    store: RedisStore, raw: aioredis.Redis, prefix: str
) -> None:
    assert await store.update(KEY, b"data", 60) is False
    assert await raw.exists(prefix + KEY) == 0
    assert await store.get(KEY) is None


async def test_late_save_does_not_resurrect_a_deleted_session(
    store: RedisStore, raw: aioredis.Redis, prefix: str
) -> None:
    token = await store.save(None, b"logged in", ttl=60, namespace=NS)
    assert token is not None
    await store.delete(token, namespace=NS)  # logout in one request ...
    # ... while a slower request, which loaded the session earlier, saves on its way out.
    assert await store.save(token, b"stale", ttl=60, namespace=NS) is None
    assert await store.load(token, namespace=NS) is None
    assert await _keys(raw, prefix) == []


async def test_remove_of_missing_key_is_a_no_op(store: RedisStore) -> None:
    await store.remove(KEY)
    assert await store.get(KEY) is None


# -- expiry ------------------------------------------------------------------------------------


async def test_every_record_has_a_ttl_and_update_resets_it(
    store: RedisStore, raw: aioredis.Redis, prefix: str
) -> None:
    token = await store.save(None, b"x", ttl=100, namespace=NS)
    assert token is not None
    key = prefix + record_key(NS, token)
    assert 0 < await raw.ttl(key) <= 100

    assert await store.save(token, b"y", ttl=5000, namespace=NS) == token
    assert 100 < await raw.ttl(key) <= 5000

    # And back down: the update sets the expiry, it does not only extend it.
    assert await store.save(token, b"z", ttl=50, namespace=NS) == token
    assert 0 < await raw.ttl(key) <= 50

    for k in await _keys(raw, prefix):
        assert await raw.ttl(k) > 0, f"{k[:16]}... has no expiry"


async def test_record_is_gone_after_its_ttl(store: RedisStore) -> None:
    token = await store.save(None, b"short-lived", ttl=1, namespace=NS)
    assert token is not None
    await asyncio.sleep(1.1)
    assert await store.load(token, namespace=NS) is None
    # Expired means gone for updates too: no resurrection through an update.
    assert await store.save(token, b"again", ttl=60, namespace=NS) is None


# -- keys ----------------------------------------------------------------------------------------


async def test_stores_with_different_prefixes_do_not_see_each_other(
    redis_server: ServerHandle, raw: aioredis.Redis, prefix: str
) -> None:
    one = RedisStore(redis_server.url, key_prefix=prefix + "one:")
    two = RedisStore(redis_server.url, key_prefix=prefix + "two:")
    try:
        token = await one.save(None, b"mine", ttl=60, namespace=NS)
        assert token is not None
        assert await two.load(token, namespace=NS) is None
        assert await two.save(token, b"theirs", ttl=60, namespace=NS) is None
        await two.delete(token, namespace=NS)
        assert await one.load(token, namespace=NS) == b"mine"
        assert await _keys(raw, prefix + "two:") == []
    finally:
        await one.close()
        await two.close()


async def test_redis_key_is_prefix_plus_hash_never_the_session_id(
    store: RedisStore, raw: aioredis.Redis, prefix: str
) -> None:
    token = await store.save(None, b"x", ttl=60, namespace=NS)
    assert token is not None
    keys = await _keys(raw, prefix)
    assert keys == [prefix + record_key(NS, token)]
    assert re.fullmatch(re.escape(prefix) + "[0-9a-f]{64}", keys[0])
    assert token not in keys[0]


async def test_default_prefix_is_session(redis_server: ServerHandle, raw: aioredis.Redis) -> None:
    s = RedisStore(redis_server.url)
    try:
        assert s.key_prefix == "session:"
        token = await s.save(None, b"x", ttl=60, namespace=NS)
        assert token is not None
        assert await raw.exists("session:" + record_key(NS, token)) == 1
        await s.delete(token, namespace=NS)
    finally:
        await s.close()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "../../etc/passwd",
        "*",
        "x" * 42,
        "x" * 44,
        "x" * 42 + "=",
        "x" * 42 + "\n",
        "x" * 42 + "\u00e9",
        "x" * 10_000,
    ],
)
async def test_malformed_token_never_reaches_redis(
    store: RedisStore, raw: aioredis.Redis, token: str
) -> None:
    before = {c: await _calls(raw, c) for c in ("mget", "set", "del")}
    assert await store.load(token, namespace=NS) is None
    assert await store.save(token, b"x", ttl=60, namespace=NS) is None
    await store.delete(token, namespace=NS)
    after = {c: await _calls(raw, c) for c in ("mget", "set", "del")}
    assert after == before


async def test_commandstats_see_a_well_formed_token(store: RedisStore, raw: aioredis.Redis) -> None:
    # The control for the test above: the same measurement does see a real lookup.
    before = await _calls(raw, "mget")
    assert await store.load(new_session_id(), namespace=NS) is None
    assert await _calls(raw, "mget") == before + 1


# -- client ownership ----------------------------------------------------------------------------


async def test_close_leaves_a_borrowed_client_open(
    redis_server: ServerHandle, raw: aioredis.Redis, prefix: str
) -> None:
    name = f"borrowed-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(_with_query(redis_server.url, client_name=name))
    try:
        s = RedisStore(client, key_prefix=prefix)
        assert not s.owns_client
        token = await s.save(None, b"x", ttl=60, namespace=NS)
        assert token is not None
        await s.close()
        await s.close()
        assert await client.ping() is True
        assert await _client_named(raw, name)
        # The store keeps working with the client it borrowed.
        assert await s.load(token, namespace=NS) == b"x"
    finally:
        await client.aclose()


async def test_close_closes_a_client_built_from_a_url(
    redis_server: ServerHandle, raw: aioredis.Redis, prefix: str
) -> None:
    name = f"owned-{uuid.uuid4().hex[:8]}"
    s = RedisStore(_with_query(redis_server.url, client_name=name), key_prefix=prefix)
    assert s.owns_client
    assert not await _client_named(raw, name)  # the constructor does not connect
    await s.open()
    assert await _client_named(raw, name)  # open() checks the server with one PING
    assert await s.save(None, b"x", ttl=60, namespace=NS) is not None
    await s.close()
    assert await _wait_until_gone(raw, name)
    await s.close()  # idempotent


async def test_constructor_does_no_io_and_open_starts_anyway_with_the_server_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on port 1: the constructor does not notice, open() logs it once and
    # returns, and each command answers StoreUnavailable.
    s = RedisStore("redis://127.0.0.1:1/0")
    try:
        caplog.set_level(logging.WARNING, logger="aiohttp_sessionkit")
        await s.open()
        assert ["starting anyway" in r.getMessage() for r in caplog.records] == [True]
        with pytest.raises(StoreUnavailable):
            await s.load(new_session_id(), namespace=NS)
    finally:
        await s.close()


# -- store down ----------------------------------------------------------------------------------


async def test_unreachable_server_raises_store_unavailable_for_every_operation() -> None:
    s = RedisStore("redis://127.0.0.1:1/0")
    token = new_session_id()
    try:
        with pytest.raises(StoreUnavailable) as info:
            await s.load(token, namespace=NS)
        assert token not in str(info.value)
        assert record_key(NS, token) not in str(info.value)
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
        with pytest.raises(StoreUnavailable):
            await s.save(None, b"x", ttl=60, namespace=NS)
        with pytest.raises(StoreUnavailable):
            await s.save(token, b"x", ttl=60, namespace=NS)
        with pytest.raises(StoreUnavailable):
            await s.delete(token, namespace=NS)
    finally:
        await s.close()


async def test_rejected_credentials_raise_store_unavailable(redis_server: ServerHandle) -> None:
    url = _with_credentials(redis_server.url, "nobody", "wrong-password")
    s = RedisStore(url)
    try:
        with pytest.raises(StoreUnavailable) as info:
            await s.load(new_session_id(), namespace=NS)
        assert isinstance(info.value.__cause__, redis.exceptions.AuthenticationError)
        assert "wrong-password" not in str(info.value)
    finally:
        await s.close()


async def test_command_errors_other_than_connectivity_propagate(
    redis_server: ServerHandle, raw: aioredis.Redis, prefix: str
) -> None:
    # A refused command (here: an ACL user without SET, a misconfiguration) is not an
    # outage, so no StoreUnavailable; the same for a lone write and for writes that went
    # together in one pipeline. (A full Redis is an outage: see tests/stores/test_eviction.py.)
    user, password = f"reader-{prefix[:-1]}", secrets.token_hex(16)
    await raw.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@read", "+ping"]
    )
    host_port = redis_server.url.split("://", 1)[1]
    store = RedisStore(f"redis://{user}:{password}@{host_port}", key_prefix=prefix)
    try:
        with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)permission"):
            await store.create(KEY, b"x", 60)
        results = await asyncio.gather(
            *(store.create(f"{i:064x}", b"x", 60) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, redis.exceptions.ResponseError) for r in results), results
        assert await store.get(KEY) is None  # reads are allowed, and nothing was written
    finally:
        await store.close()
        await raw.acl_deluser(user)


async def test_a_key_of_another_type_reads_as_no_record(
    store: RedisStore, raw: aioredis.Redis, prefix: str
) -> None:
    await raw.lpush(prefix + KEY, b"not a session")
    assert await store.get(KEY) is None


# -- batching: concurrent requests share round trips ---------------------------------------------


async def test_concurrent_reads_go_as_one_mget(store: RedisStore, raw: aioredis.Redis) -> None:
    tokens = [await store.save(None, b"p%d" % i, ttl=60, namespace=NS) for i in range(20)]
    assert all(tokens)
    unknown = new_session_id()
    before = await _calls(raw, "mget")
    loaded = await asyncio.gather(
        *(store.load(t, namespace=NS) for t in [*tokens, unknown] if t is not None)
    )
    assert loaded == [b"p%d" % i for i in range(20)] + [None]
    assert await _calls(raw, "mget") == before + 1


async def test_concurrent_writes_share_one_connection(
    redis_server: ServerHandle, raw: aioredis.Redis, prefix: str
) -> None:
    name = f"writes{uuid.uuid4().hex[:8]}"
    s = RedisStore(_with_query(redis_server.url, client_name=name), key_prefix=prefix)
    try:
        tokens = await asyncio.gather(
            *(s.save(None, b"new", ttl=60, namespace=NS) for _ in range(30))
        )
        assert len(set(tokens)) == 30 and None not in tokens
        updated = await asyncio.gather(
            *(s.save(t, b"v%d" % i, ttl=60, namespace=NS) for i, t in enumerate(tokens))
        )
        assert updated == tokens
        await asyncio.gather(*(s.delete(t, namespace=NS) for t in tokens[:10] if t is not None))
        loaded = await asyncio.gather(*(s.load(t, namespace=NS) for t in tokens if t is not None))
        assert loaded == [None] * 10 + [b"v%d" % i for i in range(10, 30)]
        clients: list[dict[str, Any]] = await raw.client_list()
        # One connection for writes and one for reads would be the most; without batching,
        # thirty concurrent writes open thirty.
        assert 1 <= sum(c.get("name") == name for c in clients) <= 2
    finally:
        await s.close()


async def test_a_reader_that_stops_waiting_does_not_disturb_the_others(
    store: RedisStore,
) -> None:
    tokens = [await store.save(None, b"p%d" % i, ttl=60, namespace=NS) for i in range(3)]
    loads = [asyncio.ensure_future(store.load(t, namespace=NS)) for t in tokens if t is not None]
    loads[1].cancel()
    results = await asyncio.gather(*loads, return_exceptions=True)
    assert results[0] == b"p0" and results[2] == b"p2"
    assert isinstance(results[1], asyncio.CancelledError)
    assert await store.load(tokens[1] or "", namespace=NS) == b"p1"


@pytest.mark.slow
async def test_store_recovers_after_the_server_comes_back(
    redis_server: ServerHandle, store: RedisStore
) -> None:
    token = await store.save(None, b"before", ttl=60, namespace=NS)
    assert token is not None
    redis_server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.load(token, namespace=NS)
        with pytest.raises(StoreUnavailable):
            await store.save(token, b"during", ttl=60, namespace=NS)
        with pytest.raises(StoreUnavailable):
            await store.save(None, b"during", ttl=60, namespace=NS)
        assert time.monotonic() - started < 3
    finally:
        redis_server.start()
    # Same store object, no re-creation. The restarted server kept nothing (no persistence).
    assert await store.load(token, namespace=NS) is None
    fresh = await store.save(None, b"after", ttl=60, namespace=NS)
    assert fresh is not None
    assert await store.load(fresh, namespace=NS) == b"after"


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key_prefix", [b"session:", 7, None, "has space:", "tab\t", "nl\n", "x" * 129]
)
def test_unreasonable_key_prefix_is_a_configuration_error(key_prefix: Any) -> None:
    with pytest.raises(ConfigurationError):
        RedisStore("redis://127.0.0.1:6379/0", key_prefix=key_prefix)


def test_empty_key_prefix_is_allowed() -> None:
    assert RedisStore("redis://127.0.0.1:6379/0", key_prefix="").key_prefix == ""


@pytest.mark.parametrize(
    "url",
    [
        "http://user:s3cret@localhost:6379/0",
        "localhost:6379",
        "",
        "redis://user:s3cret@localhost:notaport/0",
        "redis://localhost:6379/0?socket_timeout=soon",
    ],
)
def test_bad_url_is_a_configuration_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisStore(url)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://h.example:6380/1", "unix:///tmp/r.sock?db=2"]
)
def test_supported_url_schemes_are_accepted(url: str) -> None:
    assert RedisStore(url).owns_client


@pytest.mark.parametrize("client", [object(), 42, b"redis://localhost", ["redis://localhost"]])
def test_wrong_client_type_is_a_type_error(client: Any) -> None:
    with pytest.raises(TypeError):
        RedisStore(client)


def test_blocking_redis_client_is_a_type_error() -> None:
    client = redis.Redis(host="127.0.0.1", port=1)
    try:
        with pytest.raises(TypeError, match="asyncio"):
            RedisStore(client)  # type: ignore[arg-type]
    finally:
        client.close()


async def test_client_decoding_responses_is_a_configuration_error() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=1, decode_responses=True)
    try:
        with pytest.raises(ConfigurationError, match="decode_responses"):
            RedisStore(client)
    finally:
        await client.aclose()


def test_repr_does_not_show_the_url_password() -> None:
    assert "s3cret" not in repr(RedisStore("redis://u:s3cret@localhost:6379/0"))


# -- Redis Cluster -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[OneNodeCluster]:
    server: OneNodeCluster = _build(OneNodeCluster)  # a missing redis-server fails the test
    try:
        server.start()
        yield server
    finally:
        server.close()


async def test_cluster_client_is_accepted_without_connecting() -> None:
    cluster = aioredis.RedisCluster(host="127.0.0.1", port=1)  # nothing listens there
    try:
        s = RedisStore(cluster)
        assert not s.owns_client
        assert s.client is cluster
        await s.close()  # borrowed: left alone
    finally:
        await cluster.aclose()


async def test_round_trip_on_redis_cluster(redis_cluster: OneNodeCluster) -> None:
    cluster = aioredis.RedisCluster(host="127.0.0.1", port=redis_cluster.port)
    try:
        s = RedisStore(cluster, key_prefix="c:")
        token = await s.save(None, b"clustered", ttl=60, namespace=NS)
        assert token is not None
        assert await s.load(token, namespace=NS) == b"clustered"
        assert await s.save(token, b"again", ttl=60, namespace=NS) == token
        assert 0 < await cluster.ttl("c:" + record_key(NS, token)) <= 60
        await s.delete(token, namespace=NS)
        assert await s.load(token, namespace=NS) is None
        assert await s.save(token, b"late", ttl=60, namespace=NS) is None
        await s.close()
        assert await cluster.ping() is True  # borrowed, still open
    finally:
        await cluster.aclose()


async def test_concurrent_calls_on_redis_cluster_keep_their_semantics(
    redis_cluster: OneNodeCluster,
) -> None:
    # On a cluster each call is its own command (no batch: see RedisStore._on_cluster), sent
    # concurrently. Twenty sessions hash to many slots.
    cluster = aioredis.RedisCluster(host="127.0.0.1", port=redis_cluster.port)
    try:
        s = RedisStore(cluster, key_prefix="cc:")
        tokens = await asyncio.gather(
            *(s.save(None, b"new", ttl=60, namespace=NS) for _ in range(20))
        )
        assert None not in tokens and len(set(tokens)) == 20
        live = [t for t in tokens if t is not None]
        updated = await asyncio.gather(
            *(s.save(t, b"v%d" % i, ttl=60, namespace=NS) for i, t in enumerate(live))
        )
        assert updated == live
        await asyncio.gather(*(s.delete(t, namespace=NS) for t in live[:5]))
        loaded = await asyncio.gather(*(s.load(t, namespace=NS) for t in live))
        assert loaded == [None] * 5 + [b"v%d" % i for i in range(5, 20)]
        late = await asyncio.gather(*(s.save(t, b"late", ttl=60, namespace=NS) for t in live[:5]))
        assert late == [None] * 5  # deleted sessions are not re-created by a batched update
        await s.close()
    finally:
        await cluster.aclose()
