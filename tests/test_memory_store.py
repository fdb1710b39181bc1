"""Unit tests of MemoryStore: copies, expiry, the max_entries bound, purge."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import DummyCookieJar, web
from pytest_aiohttp import AiohttpClient

import aiohttp_sessionkit.stores.memory as memory_module
from aiohttp_sessionkit import ConfigurationError, MemoryStore, get_session, setup


class FakeMonotonic:
    """Stands in for the ``time`` module inside the memory store only (asyncio keeps its clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr(memory_module, "time", fake)
    return fake


def key(name: str) -> str:
    """A record key of the shape ServerStore hands to drivers (64 hex characters)."""
    return name.encode().hex().ljust(64, "0")


A, B, C, D = key("a"), key("b"), key("c"), key("d")


# -- copies ----------------------------------------------------------------------------------------


async def test_mutating_session_values_after_the_response_does_not_change_the_stored_session(
    aiohttp_client: AiohttpClient,
) -> None:
    leaked: dict[str, Any] = {}

    async def write(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["cart"] = ["apple"]
        leaked["cart"] = session["cart"]
        leaked["session"] = session
        return web.Response(text="ok")

    async def read(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response(session.get("cart"))

    app = web.Application()
    setup(app, MemoryStore())
    app.router.add_post("/write", write)
    app.router.add_get("/read", read)
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())

    response = await client.post("/write")
    cookie = response.cookies["AIOHTTP_SESSION"].value
    leaked["cart"].append("stolen")
    leaked["session"]["extra"] = "late"

    again = await client.get("/read", headers={"Cookie": f"AIOHTTP_SESSION={cookie}"})
    assert await again.json() == ["apple"]


async def test_loaded_payload_equals_the_saved_bytes() -> None:
    store = MemoryStore()
    data = b"\x00payload\xff"
    assert await store.create(A, data, 60)
    assert await store.get(A) == data
    assert await store.get(B) is None


# -- expiry ----------------------------------------------------------------------------------------


async def test_record_expires_on_read_exactly_at_its_ttl(clock: FakeMonotonic) -> None:
    store = MemoryStore()
    assert await store.create(A, b"x", 10)
    clock.advance(9.5)
    assert await store.get(A) == b"x"
    clock.advance(0.5)
    assert await store.get(A) is None
    assert len(store) == 0  # the expired record was dropped when read


async def test_update_resets_the_expiry(clock: FakeMonotonic) -> None:
    store = MemoryStore()
    await store.create(A, b"v1", 10)
    clock.advance(8)
    assert await store.update(A, b"v2", 10)
    clock.advance(8)  # 16 s after creation, 8 s after the update
    assert await store.get(A) == b"v2"


async def test_create_on_an_expired_key_succeeds(clock: FakeMonotonic) -> None:
    store = MemoryStore()
    await store.create(A, b"old", 5)
    clock.advance(5)
    assert await store.create(A, b"new", 5)
    assert await store.get(A) == b"new"


async def test_create_on_a_live_key_fails_and_keeps_the_record(clock: FakeMonotonic) -> None:
    store = MemoryStore()
    await store.create(A, b"old", 5)
    clock.advance(4)
    assert not await store.create(A, b"new", 100)
    assert await store.get(A) == b"old"
    clock.advance(1)
    assert await store.get(A) is None  # the failed create did not extend the ttl either


async def test_update_on_an_expired_key_fails_and_does_not_resurrect_it(
    clock: FakeMonotonic,
) -> None:
    store = MemoryStore()
    await store.create(A, b"old", 5)
    clock.advance(6)
    assert not await store.update(A, b"new", 100)
    assert await store.get(A) is None
    assert len(store) == 0


async def test_update_on_an_unknown_key_fails_and_creates_nothing() -> None:
    store = MemoryStore()
    assert not await store.update(A, b"new", 100)
    assert await store.get(A) is None
    assert len(store) == 0


async def test_remove_is_idempotent() -> None:
    store = MemoryStore()
    await store.create(A, b"x", 60)
    await store.remove(A)
    await store.remove(A)
    assert await store.get(A) is None
    assert len(store) == 0


async def test_purge_expired_returns_how_many_went(clock: FakeMonotonic) -> None:
    store = MemoryStore()
    await store.create(A, b"a", 5)
    await store.create(B, b"b", 10)
    await store.create(C, b"c", 100)
    assert await store.purge_expired() == 0
    clock.advance(10)
    assert len(store) == 3  # expired records stay until read, purged or evicted
    assert await store.purge_expired() == 2
    assert len(store) == 1
    assert await store.get(C) == b"c"
    assert await store.purge_expired() == 0


async def test_len_counts_records() -> None:
    store = MemoryStore()
    assert len(store) == 0
    await store.create(A, b"a", 60)
    await store.create(B, b"b", 60)
    assert len(store) == 2
    await store.update(A, b"a2", 60)
    assert len(store) == 2
    await store.remove(B)
    assert len(store) == 1


# -- the max_entries bound ------------------------------------------------------------------------


async def test_full_store_evicts_an_expired_record_before_a_live_one(
    clock: FakeMonotonic,
) -> None:
    store = MemoryStore(max_entries=3)
    await store.create(A, b"a", 100)  # least recently used, but live
    await store.create(B, b"b", 5)
    await store.create(C, b"c", 100)
    clock.advance(5)  # B has expired
    assert await store.create(D, b"d", 100)
    assert len(store) == 3
    assert await store.get(A) == b"a"
    assert await store.get(C) == b"c"
    assert await store.get(D) == b"d"


async def test_full_store_evicts_the_least_recently_used(clock: FakeMonotonic) -> None:
    store = MemoryStore(max_entries=3)
    await store.create(A, b"a", 100)
    await store.create(B, b"b", 100)
    await store.create(C, b"c", 100)
    assert await store.get(A) == b"a"  # A is now more recent than B
    assert await store.create(D, b"d", 100)
    assert len(store) == 3
    assert await store.get(B) is None
    assert await store.get(A) == b"a"
    assert await store.get(C) == b"c"
    assert await store.get(D) == b"d"


async def test_update_counts_as_a_use(clock: FakeMonotonic) -> None:
    store = MemoryStore(max_entries=2)
    await store.create(A, b"a", 100)
    await store.create(B, b"b", 100)
    assert await store.update(A, b"a2", 100)
    await store.create(C, b"c", 100)
    assert await store.get(B) is None
    assert await store.get(A) == b"a2"


async def test_recreating_an_expired_key_counts_as_a_use(clock: FakeMonotonic) -> None:
    store = MemoryStore(max_entries=3)
    await store.create(A, b"old", 5)
    await store.create(B, b"b", 100)
    await store.create(C, b"c", 100)
    clock.advance(5)
    assert await store.create(A, b"new", 100)  # A is now the most recently used
    assert await store.create(D, b"d", 100)
    assert await store.get(A) == b"new"
    assert await store.get(B) is None


async def test_replacing_an_existing_key_does_not_evict(clock: FakeMonotonic) -> None:
    store = MemoryStore(max_entries=2)
    await store.create(A, b"a", 5)
    await store.create(B, b"b", 100)
    clock.advance(5)
    assert await store.create(A, b"a2", 100)  # the same key: no room needed
    assert await store.get(B) == b"b"
    assert await store.get(A) == b"a2"


async def test_store_never_exceeds_max_entries() -> None:
    store = MemoryStore(max_entries=3)
    for i in range(10):
        assert await store.create(key(f"k{i}"), b"x", 100)
        assert len(store) <= 3
    assert [await store.get(key(f"k{i}")) for i in range(10)] == [None] * 7 + [b"x"] * 3


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "10"])
def test_max_entries_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_entries"):
        MemoryStore(max_entries=bad)


# -- the session layer's synchronous load ----------------------------------------------------------


@pytest.mark.parametrize("override", ["load", "load_nowait"])
async def test_a_subclass_that_overrides_loading_is_never_bypassed(
    aiohttp_client: AiohttpClient, override: str
) -> None:
    # The session layer calls load_nowait directly, without load's coroutine: only when the
    # class whose load would run defines load_nowait too, so an overridden load still runs.
    calls: list[str] = []

    class Spy(MemoryStore):
        async def load(self, token: str, *, namespace: str) -> bytes | None:
            calls.append("load")
            return await super().load(token, namespace=namespace)

    class NowSpy(MemoryStore):
        def load_nowait(self, token: str, namespace: str) -> bytes | None:
            calls.append("load_nowait")
            return super().load_nowait(token, namespace)

    async def write(request: web.Request) -> web.Response:
        (await get_session(request))["n"] = 1
        return web.Response(text="ok")

    async def read(request: web.Request) -> web.Response:
        return web.json_response((await get_session(request)).get("n"))

    app = web.Application()
    setup(app, Spy() if override == "load" else NowSpy())
    app.router.add_get("/write", write)
    app.router.add_get("/read", read)
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    cookie = (await client.get("/write")).cookies["AIOHTTP_SESSION"].value
    calls.clear()
    response = await client.get("/read", headers={"Cookie": f"AIOHTTP_SESSION={cookie}"})
    assert await response.json() == 1
    assert calls == [override]
