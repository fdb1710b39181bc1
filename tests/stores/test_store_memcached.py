"""MemcachedStore against a real memcached (``memcached_server`` from ``tests/harness/servers.py``).

The contract suites run on memcached through the parametrized store fixtures; this file
keeps what only this driver has: item names and expiry times on the wire, batching, the
item size limit, a server that goes away in the middle of a reply, and configuration.
Where a test needs to see the wire, a small TCP relay sits between the store and the real
server and records what the store sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiomcache
import pytest
from aiohttp import web

from aiohttp_sessionkit import (
    ConfigurationError,
    MemcachedStore,
    StoreError,
    StoreUnavailable,
    get_session,
    store_from_url,
)
from aiohttp_sessionkit.ids import new_session_id, record_key
from tests.harness.servers import HOST, ServerHandle, free_port
from tests.stores.test_contract import COOKIE_WIRE, build_app, client_for, login, read, with_cookie

NS = "AIOHTTP_SESSION"
KEY = "ab" * 32  # a record key in the shape ServerStore passes: 64 lowercase hex
MIB = 1024 * 1024


def _address(server: ServerHandle) -> tuple[str, int]:
    host, port = server.url.removeprefix("memcached://").rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def prefix() -> str:
    # The server lives for the whole session; a prefix per test keeps tests apart.
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def raw(memcached_server: ServerHandle) -> AsyncIterator[aiomcache.Client]:
    """A client of our own for looking behind the store's back."""
    client = aiomcache.Client(*_address(memcached_server))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def store(memcached_server: ServerHandle, prefix: str) -> AsyncIterator[MemcachedStore]:
    s = MemcachedStore(memcached_server.url, key_prefix=prefix)
    try:
        yield s
    finally:
        await s.close()


class Relay:
    """A TCP relay to the real memcached that records what clients send.

    ``cut_after_command``: close the client's connection as soon as a command arrives, so
    the command is never answered (the server went away mid-reply).
    """

    def __init__(self, upstream: tuple[str, int], *, cut_after_command: bool = False) -> None:
        self.upstream = upstream
        self.cut_after_command = cut_after_command
        self.sent = bytearray()
        self.chunks: list[bytes] = []  # each read from a client, in arrival order
        self.connections = 0
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"memcached://{HOST}:{self.server.sockets[0].getsockname()[1]}"

    def lines(self, verb: bytes) -> list[bytes]:
        """The command lines sent so far that start with ``verb``."""
        return [line for line in bytes(self.sent).split(b"\r\n") if line.startswith(verb + b" ")]

    async def __aenter__(self) -> Relay:
        self.server = await asyncio.start_server(self._serve, HOST, 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        if self.cut_after_command:
            self.sent += await reader.read(65536)
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers.append(up_writer)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if record:
                        self.sent += data
                        self.chunks.append(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for task in (
            asyncio.ensure_future(pump(reader, up_writer, True)),
            asyncio.ensure_future(pump(up_reader, writer, False)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


# -- items on the server -------------------------------------------------------------------


async def test_the_item_is_prefix_plus_hash_never_the_session_id(
    store: MemcachedStore, raw: aiomcache.Client, prefix: str
) -> None:
    token = await store.save(None, b"payload", ttl=60, namespace=NS)
    assert token is not None
    assert await raw.get((prefix + record_key(NS, token)).encode()) == b"payload"
    assert await raw.get((prefix + token).encode()) is None
    assert await raw.get(token.encode()) is None


async def test_the_default_prefix_is_session(memcached_server: ServerHandle) -> None:
    s = MemcachedStore(memcached_server.url)
    try:
        assert s.key_prefix == "session:"
        token = await s.save(None, b"x", ttl=60, namespace=NS)
        assert token is not None
        client = aiomcache.Client(*_address(memcached_server))
        try:
            assert await client.get(b"session:" + record_key(NS, token).encode()) == b"x"
        finally:
            await client.close()
    finally:
        await s.close()


async def test_create_refuses_a_live_item_and_update_never_creates(
    store: MemcachedStore, raw: aiomcache.Client, prefix: str
) -> None:
    assert await store.create(KEY, b"first", 60) is True
    assert await store.create(KEY, b"second", 60) is False
    assert await raw.get((prefix + KEY).encode()) == b"first"
    await store.remove(KEY)
    await store.remove(KEY)  # idempotent
    assert await store.update(KEY, b"late", 60) is False
    assert await raw.get((prefix + KEY).encode()) is None


@pytest.mark.parametrize(
    ("ttl", "absolute"),
    [(60, False), (30 * 24 * 3600, False), (30 * 24 * 3600 + 1, True), (400 * 24 * 3600, True)],
)
async def test_expiry_is_relative_up_to_30_days_and_a_unix_time_beyond(
    memcached_server: ServerHandle, prefix: str, ttl: int, absolute: bool
) -> None:
    async with Relay(_address(memcached_server)) as relay:
        s = MemcachedStore(relay.url, key_prefix=prefix)
        try:
            token = await s.save(None, b"data", ttl=ttl, namespace=NS)
            assert token is not None
            assert await s.save(token, b"more", ttl=ttl, namespace=NS) == token
            assert await s.load(token, namespace=NS) == b"more"
        finally:
            await s.close()
    writes = relay.lines(b"add") + relay.lines(b"replace")
    assert len(writes) == 2
    for line in writes:
        exptime = int(line.split()[3])
        if absolute:
            assert abs(exptime - (time.time() + ttl)) < 60
        else:
            assert exptime == ttl


async def test_an_item_is_gone_after_its_ttl(store: MemcachedStore) -> None:
    token = await store.save(None, b"short", ttl=1, namespace=NS)
    assert token is not None
    assert await store.load(token, namespace=NS) == b"short"
    # memcached's clock ticks in whole seconds: an item set with 1 s lives up to 2.
    await asyncio.sleep(2.2)
    assert await store.load(token, namespace=NS) is None
    assert await store.save(token, b"revived", ttl=60, namespace=NS) is None


# -- batching --------------------------------------------------------------------------------


async def test_concurrent_loads_go_as_one_multi_key_get(
    memcached_server: ServerHandle, prefix: str
) -> None:
    async with Relay(_address(memcached_server)) as relay:
        s = MemcachedStore(relay.url, key_prefix=prefix)
        try:
            tokens = [await s.save(None, b"p%d" % i, ttl=60, namespace=NS) for i in range(20)]
            unknown = new_session_id()
            wanted = [t for t in tokens if t is not None] + [unknown, tokens[0] or ""]
            loaded = await asyncio.gather(*(s.load(t, namespace=NS) for t in wanted))
        finally:
            await s.close()
    assert loaded == [b"p%d" % i for i in range(20)] + [None, b"p0"]
    # gets, not get: the CAS uniques come with the payloads (see the next test).
    gets = relay.lines(b"gets")
    assert len(gets) == 1
    assert len(gets[0].split()) == 1 + 21  # "gets" and each distinct item once


async def test_a_swap_from_a_loaded_payload_is_one_cas_with_the_unique_the_load_saw(
    memcached_server: ServerHandle, prefix: str
) -> None:
    async with Relay(_address(memcached_server)) as relay:
        s = MemcachedStore(relay.url, key_prefix=prefix)
        other = MemcachedStore(memcached_server.url, key_prefix=prefix)
        try:
            key = record_key(NS, new_session_id())
            assert await s.create(key, b"loaded", 60)
            assert await s.get(key) == b"loaded"
            assert await s.replace(key, b"loaded", b"swapped", 60)
            assert relay.lines(b"gets") == [b"gets " + (prefix + key).encode()]  # the load's
            assert len(relay.lines(b"cas")) == 1
            # Another writer since the load: the remembered unique is refused, the store
            # reads again, and compares with what it finds.
            assert await s.get(key) == b"swapped"
            assert await other.replace(key, b"swapped", b"theirs", 60)
            assert not await s.replace(key, b"swapped", b"lost", 60)
            assert await s.get(key) == b"theirs"
        finally:
            await s.close()
            await other.close()


async def test_concurrent_writes_go_in_one_round_trip_each_with_its_own_result(
    memcached_server: ServerHandle, prefix: str
) -> None:
    async with Relay(_address(memcached_server)) as relay:
        s = MemcachedStore(relay.url, key_prefix=prefix)
        try:
            tokens = await asyncio.gather(
                *(s.save(None, b"new", ttl=60, namespace=NS) for _ in range(30))
            )
            assert len(set(tokens)) == 30 and None not in tokens
            gone = tokens[:10]
            await asyncio.gather(*(s.delete(t or "", namespace=NS) for t in gone))
            updated = await asyncio.gather(
                *(s.save(t, b"v%d" % i, ttl=60, namespace=NS) for i, t in enumerate(tokens))
            )
            loaded = await asyncio.gather(*(s.load(t or "", namespace=NS) for t in tokens))
        finally:
            await s.close()
    # The deleted ten are not brought back by the updates in the same pipeline.
    assert updated == [None] * 10 + tokens[10:]
    assert loaded == [None] * 10 + [b"v%d" % i for i in range(10, 30)]
    # Each burst left as one pipeline: one write, which loopback delivers in one piece;
    # without batching thirty commands go as thirty writes over the pool's connections.
    for verb, count in ((b"add ", 30), (b"delete ", 10), (b"replace ", 30)):
        carrying = [chunk for chunk in relay.chunks if verb in chunk]
        assert len(carrying) == 1, verb
        assert carrying[0].count(verb) == count


# -- the item size limit ---------------------------------------------------------------------


async def test_a_payload_over_the_item_size_limit_is_refused_and_the_old_one_kept(
    store: MemcachedStore,
) -> None:
    token = await store.save(None, b"small", ttl=60, namespace=NS)
    assert token is not None
    for size in (MIB - 100, MIB, 3 * MIB):
        with pytest.raises(StoreError, match="max_item_size") as info:
            await store.save(token, b"x" * size, ttl=60, namespace=NS)
        assert not isinstance(info.value, StoreUnavailable)
        with pytest.raises(StoreError, match="max_item_size"):
            await store.save(None, b"x" * size, ttl=60, namespace=NS)
    assert await store.load(token, namespace=NS) == b"small"
    # The largest payload that fits goes through whole.
    big = bytes(range(256)) * ((MIB - 200) // 256)
    assert await store.save(token, big, ttl=60, namespace=NS) == token
    assert await store.load(token, namespace=NS) == big


async def test_a_server_with_a_smaller_limit_than_configured_refuses_never_truncates(
    memcached_server: ServerHandle, prefix: str
) -> None:
    # The test server runs with memcached's default 1 MiB; the store is told 4 MiB.
    s = MemcachedStore(memcached_server.url, key_prefix=prefix, max_item_size=4 * MIB)
    try:
        assert s.max_item_size == 4 * MIB
        token = await s.save(None, b"small", ttl=60, namespace=NS)
        assert token is not None
        results = await asyncio.gather(
            s.save(token, b"y" * (2 * MIB), ttl=60, namespace=NS),
            s.save(None, b"neighbour", ttl=60, namespace=NS),  # same pipeline, unharmed
            return_exceptions=True,
        )
        assert isinstance(results[0], StoreError)
        assert not isinstance(results[0], StoreUnavailable)
        assert "too large" in str(results[0])
        assert isinstance(results[1], str)
        assert await s.load(results[1], namespace=NS) == b"neighbour"
        assert await s.load(token, namespace=NS) == b"small"
    finally:
        await s.close()


async def test_an_oversized_session_fails_its_request_and_leaves_the_session_as_it_was(
    aiohttp_client: Any, store: MemcachedStore
) -> None:
    app = build_app(store, COOKIE_WIRE)

    async def huge(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["blob"] = "z" * (2 * MIB)
        return web.Response(text="stored?")

    app.router.add_post("/huge", huge)
    client = await client_for(aiohttp_client, app)
    cookie = await login(client, COOKIE_WIRE, user="alice")
    response = await client.post("/huge", headers=with_cookie(cookie))
    assert response.status == 500
    assert "Set-Cookie" not in response.headers
    assert (await read(client, COOKIE_WIRE, cookie))["data"] == {"user": "alice"}


# -- unreachable and broken servers ------------------------------------------------------------


async def test_unreachable_memcached_answers_503_with_retry_after_also_from_startup(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiohttp_sessionkit")
    store = MemcachedStore(f"memcached://{HOST}:{free_port()}")  # nothing listens there
    try:
        client = await client_for(aiohttp_client, build_app(store, COOKIE_WIRE))
        startup = [r.getMessage() for r in caplog.records if "at startup" in r.getMessage()]
        assert len(startup) == 1 and "starting anyway" in startup[0]
        assert (await client.get("/untouched")).status == 200
        someone = with_cookie(new_session_id())
        for method, path, headers in [
            ("POST", "/incr", {}),
            ("GET", "/read", someone),
            ("POST", "/set/user/mallory", someone),
            ("POST", "/logout", someone),
        ]:
            response = await client.request(method, path, headers=headers)
            assert response.status == 503, (method, path)
            assert response.headers["Retry-After"].isdigit()
            assert "Set-Cookie" not in response.headers
    finally:
        await store.close()


async def test_every_operation_on_an_unreachable_server_raises_store_unavailable() -> None:
    s = MemcachedStore(f"memcached://{HOST}:{free_port()}")
    try:
        started = time.monotonic()
        for call in (
            s.get(KEY),
            s.create(KEY, b"x", 60),
            s.update(KEY, b"x", 60),
            s.remove(KEY),
        ):
            with pytest.raises(StoreUnavailable, match="memcached"):
                await call
        assert time.monotonic() - started < 2
    finally:
        await s.close()


@pytest.mark.parametrize("operation", ["get", "create", "update", "remove"])
async def test_a_server_that_hangs_up_mid_reply_is_unavailable_not_a_hang(
    memcached_server: ServerHandle, operation: str
) -> None:
    # aiomcache 0.8.2's own storage commands spin forever on such a connection, freezing the
    # event loop; the store reads replies itself and must see the end of the stream.
    async with Relay(_address(memcached_server), cut_after_command=True) as relay:
        s = MemcachedStore(relay.url)
        try:
            calls: dict[str, Callable[[], Awaitable[Any]]] = {
                "get": lambda: s.get(KEY),
                "create": lambda: s.create(KEY, b"x", 60),
                "update": lambda: s.update(KEY, b"x", 60),
                "remove": lambda: s.remove(KEY),
            }
            async with asyncio.timeout(5):
                with pytest.raises(StoreUnavailable):
                    await calls[operation]()
        finally:
            await s.close()


async def test_a_read_that_stops_waiting_leaves_no_stale_reply_for_the_next_command(
    memcached_server: ServerHandle, prefix: str
) -> None:
    # One connection in the pool: a reply left unread on it would answer the next command.
    client = aiomcache.Client(*_address(memcached_server), pool_size=1)
    s = MemcachedStore(client, key_prefix=prefix)
    try:
        first = await s.save(None, b"first", ttl=60, namespace=NS)
        second = await s.save(None, b"second", ttl=60, namespace=NS)
        assert first is not None and second is not None
        for _ in range(20):
            pending = asyncio.ensure_future(s.load(first, namespace=NS))
            await asyncio.sleep(0)  # the batch leaves; the reply is on its way
            await asyncio.sleep(0)
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
            assert await s.create(KEY, b"k", 60) in (True, False)
            assert await s.load(second, namespace=NS) == b"second"
            assert await s.load(first, namespace=NS) == b"first"
    finally:
        await s.close()
        await client.close()


@pytest.mark.slow
async def test_the_store_recovers_after_the_server_comes_back(
    memcached_server: ServerHandle, store: MemcachedStore
) -> None:
    if memcached_server.external:
        pytest.skip("an external server cannot be stopped")
    token = await store.save(None, b"before", ttl=60, namespace=NS)
    assert token is not None
    await asyncio.to_thread(memcached_server.stop)
    try:
        with pytest.raises(StoreUnavailable):
            await store.load(token, namespace=NS)
        with pytest.raises(StoreUnavailable):
            await store.save(None, b"during", ttl=60, namespace=NS)
    finally:
        await asyncio.to_thread(memcached_server.start)
    # Same store object. memcached keeps nothing across a restart.
    assert await store.load(token, namespace=NS) is None
    fresh = await store.save(None, b"after", ttl=60, namespace=NS)
    assert fresh is not None
    assert await store.load(fresh, namespace=NS) == b"after"


# -- clients, URLs and configuration -------------------------------------------------------------


async def test_a_store_from_a_url_owns_its_client_and_a_handed_one_is_borrowed(
    memcached_server: ServerHandle, raw: aiomcache.Client, prefix: str
) -> None:
    owned = store_from_url(memcached_server.url)
    assert isinstance(owned, MemcachedStore) and owned.owns_client
    await owned.open()
    assert await owned.get(KEY) is None
    await owned.close()
    await owned.close()  # idempotent

    borrowed = MemcachedStore(raw, key_prefix=prefix)
    assert not borrowed.owns_client and borrowed.client is raw
    assert await borrowed.create(KEY, b"x", 60) is True
    await borrowed.close()
    assert await raw.get((prefix + KEY).encode()) == b"x"  # the client still works


async def test_constructor_does_no_io() -> None:
    s = MemcachedStore(f"memcached://{HOST}:{free_port()}")  # nothing listens there
    assert s.owns_client
    await s.close()  # nothing was opened


@pytest.mark.parametrize(
    "key_prefix", [b"session:", 7, None, "has space:", "tab\t", "nl\n", "é:", "x" * 129]
)
def test_unreasonable_key_prefix_is_a_configuration_error(key_prefix: Any) -> None:
    with pytest.raises(ConfigurationError):
        MemcachedStore("memcached://127.0.0.1:11211", key_prefix=key_prefix)


@pytest.mark.parametrize("max_item_size", [0, 1023, -1, 1.5, "1m", True])
def test_unreasonable_max_item_size_is_a_configuration_error(max_item_size: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_item_size"):
        MemcachedStore("memcached://127.0.0.1:11211", max_item_size=max_item_size)


@pytest.mark.parametrize(
    "url",
    [
        "memcache://localhost:11211",
        "redis://user:s3cret@localhost:6379/0",
        "memcached://user:s3cret@localhost:11211",
        "memcached://localhost:notaport",
        "memcached://localhost:99999",
        "memcached://localhost:11211/0",
        "memcached://localhost:11211?pool=s3cret",
        "memcached://",
        "localhost:11211",
        "",
    ],
)
def test_bad_url_is_a_configuration_error_without_echoing_it(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        MemcachedStore(url)
    assert "s3cret" not in str(info.value)
    assert "memcached://host:port" in str(info.value)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("memcached://localhost", ("localhost", 11211)),
        ("memcached://10.0.0.5:11311/", ("10.0.0.5", 11311)),
        ("MEMCACHED://[::1]:11211", ("::1", 11211)),
    ],
)
def test_supported_urls_are_accepted(url: str, address: tuple[str, int]) -> None:
    s = MemcachedStore(url)
    assert s.owns_client
    pool: Any = s.client._pool  # the address the owned client connects to
    assert (pool._host, pool._port) == address


@pytest.mark.parametrize("client", [object(), 42, b"memcached://localhost", ["localhost"]])
def test_wrong_client_type_is_a_type_error(client: Any) -> None:
    with pytest.raises(TypeError, match=r"aiomcache\.Client"):
        MemcachedStore(client)


def test_repr_names_the_prefix_and_the_ownership() -> None:
    assert repr(MemcachedStore("memcached://localhost:11211", key_prefix="app:")) == (
        "<MemcachedStore key_prefix='app:' client=owned>"
    )
