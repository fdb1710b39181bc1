"""Unit tests of MemoryStore: copies, expiry, the max_entries bound, purge, and which
sessions it may evict (anonymous ones, never those made by new_session or regenerate)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import pytest
from aiohttp import DummyCookieJar, web
from cryptography.fernet import Fernet
from pytest_aiohttp import AiohttpClient

import aiohttp_sessionkit.stores.memory as memory_module
from aiohttp_sessionkit import (
    AbstractStore,
    ConfigurationError,
    MemoryStore,
    StoreUnavailable,
    get_session,
    new_session,
    setup,
)
from aiohttp_sessionkit.abc import AbstractLegacyReader
from aiohttp_sessionkit.ids import record_key
from aiohttp_sessionkit.legacy import AiohttpSessionCookie


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


async def visitor(store: MemoryStore, key: str, data: bytes, ttl: int) -> bool:
    """Create an anonymous session's record, as the session layer does for a visitor (a bare
    create() is a record kept for security, which is never evicted)."""
    return await store._create_record(key, data, ttl, established=False)


async def test_full_store_evicts_an_expired_record_before_a_live_one(
    clock: FakeMonotonic,
) -> None:
    store = MemoryStore(max_entries=3)
    await visitor(store, A, b"a", 100)  # least recently used, but live
    await visitor(store, B, b"b", 5)
    await visitor(store, C, b"c", 100)
    clock.advance(5)  # B has expired
    assert await visitor(store, D, b"d", 100)
    assert len(store) == 3
    assert await store.get(A) == b"a"
    assert await store.get(C) == b"c"
    assert await store.get(D) == b"d"


async def test_full_store_evicts_the_least_recently_used(clock: FakeMonotonic) -> None:
    store = MemoryStore(max_entries=3)
    await visitor(store, A, b"a", 100)
    await visitor(store, B, b"b", 100)
    await visitor(store, C, b"c", 100)
    assert await store.get(A) == b"a"  # A is now more recent than B
    assert await visitor(store, D, b"d", 100)
    assert len(store) == 3
    assert await store.get(B) is None
    assert await store.get(A) == b"a"
    assert await store.get(C) == b"c"
    assert await store.get(D) == b"d"


async def test_update_counts_as_a_use(clock: FakeMonotonic) -> None:
    store = MemoryStore(max_entries=2)
    await visitor(store, A, b"a", 100)
    await visitor(store, B, b"b", 100)
    assert await store.update(A, b"a2", 100)
    await visitor(store, C, b"c", 100)
    assert await store.get(B) is None
    assert await store.get(A) == b"a2"


async def test_recreating_an_expired_key_counts_as_a_use(clock: FakeMonotonic) -> None:
    store = MemoryStore(max_entries=3)
    await visitor(store, A, b"old", 5)
    await visitor(store, B, b"b", 100)
    await visitor(store, C, b"c", 100)
    clock.advance(5)
    assert await visitor(store, A, b"new", 100)  # A is now the most recently used
    assert await visitor(store, D, b"d", 100)
    assert await store.get(A) == b"new"
    assert await store.get(B) is None


async def test_replacing_an_existing_key_does_not_evict(clock: FakeMonotonic) -> None:
    store = MemoryStore(max_entries=2)
    await visitor(store, A, b"a", 5)
    await visitor(store, B, b"b", 100)
    clock.advance(5)
    assert await visitor(store, A, b"a2", 100)  # the same key: no room needed
    assert await store.get(B) == b"b"
    assert await store.get(A) == b"a2"


async def test_store_never_exceeds_max_entries() -> None:
    store = MemoryStore(max_entries=3)
    for i in range(10):
        assert await visitor(store, key(f"k{i}"), b"x", 100)
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
    # The session layer calls load_nowait directly, without load's coroutine: only while load
    # is the very function the twin declares it mirrors (abc.mirrors), so an override runs.
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


# -- anonymous and established sessions ----------------------------------------------------------

NS = "AIOHTTP_SESSION"


async def made(store: MemoryStore, *, established: bool, ttl: int = 100) -> str:
    # An anonymous session is saved without the keyword, as any store has always been called.
    if established:
        token = await store.save(None, b"x", ttl=ttl, namespace=NS, established=True)
    else:
        token = await store.save(None, b"x", ttl=ttl, namespace=NS)
    assert token is not None
    return token


async def alive(store: MemoryStore, token: str) -> bool:
    return await store.load(token, namespace=NS) is not None


async def test_anonymous_sessions_never_evict_established_ones(clock: FakeMonotonic) -> None:
    store = MemoryStore(max_entries=10)
    users = [await made(store, established=True) for _ in range(5)]
    visitors = [await made(store, established=False) for _ in range(1_000)]
    assert len(store) == 10
    assert all([await alive(store, user) for user in users])
    # The anonymous half is the five most recent visitors.
    assert [await alive(store, v) for v in visitors[-6:]] == [False] + [True] * 5


async def test_an_established_session_evicts_the_least_recently_used_anonymous_one(
    clock: FakeMonotonic,
) -> None:
    store = MemoryStore(max_entries=3)
    first, second = await made(store, established=False), await made(store, established=False)
    user = await made(store, established=True)
    assert await alive(store, first)  # now more recent than `second`
    late = await made(store, established=True)
    assert [await alive(store, t) for t in (first, second, user, late)] == [True, False, True, True]


@pytest.mark.parametrize("established", [False, True])
async def test_a_store_full_of_established_sessions_refuses_new_ones(
    clock: FakeMonotonic, established: bool
) -> None:
    store = MemoryStore(max_entries=3)
    users = [await made(store, established=True) for _ in range(3)]
    with pytest.raises(StoreUnavailable, match="max_entries"):
        await made(store, established=established)
    assert len(store) == 3 and all([await alive(store, user) for user in users])
    await store.delete(users[0], namespace=NS)  # a logout makes room again
    assert await alive(store, await made(store, established=established))


async def test_every_expired_record_goes_before_any_live_one(clock: FakeMonotonic) -> None:
    # The case: 500 live visitors older than 500 expired records (far beyond any
    # scan of the oldest few), then a store full: no live visitor may be evicted.
    store = MemoryStore(max_entries=1_000)
    visitors = [await made(store, established=False, ttl=100) for _ in range(500)]
    for _ in range(500):
        await made(store, established=False, ttl=5)
    clock.advance(5)
    for _ in range(500):
        await made(store, established=False, ttl=100)
    assert len(store) == 1_000
    assert all([await alive(store, v) for v in visitors])


async def test_an_expired_established_session_makes_room(clock: FakeMonotonic) -> None:
    store = MemoryStore(max_entries=2)
    await made(store, established=True, ttl=5)
    user = await made(store, established=True, ttl=100)
    clock.advance(5)
    newcomer = await made(store, established=False)
    assert await alive(store, user) and await alive(store, newcomer)


@pytest.mark.parametrize("path", ["save_nowait", "save", "update"])
async def test_an_update_that_shortens_the_lifetime_expires_at_the_new_time(
    clock: FakeMonotonic, path: str
) -> None:
    # Both the synchronous fast path and the coroutine must keep "expired goes first" true
    # when an update brings a record's expiry forward (an absolute timeout drawing near).
    store = MemoryStore(max_entries=2)
    shortened = await made(store, established=True, ttl=100)
    visitor = await made(store, established=False, ttl=100)
    if path == "save_nowait":
        assert store.save_nowait(shortened, b"y", 5, NS) == shortened
    elif path == "save":
        assert await store.save(shortened, b"y", ttl=5, namespace=NS) == shortened
    else:  # the driver operation ServerStore.save would call
        assert await store.update(record_key(NS, shortened), b"y", 5)
    clock.advance(5)
    newcomer = await made(store, established=False)
    assert [await alive(store, t) for t in (shortened, visitor, newcomer)] == [False, True, True]


@pytest.mark.parametrize("path", ["load_nowait", "save_nowait"])
async def test_the_synchronous_path_keeps_an_established_session_established(
    clock: FakeMonotonic, path: str
) -> None:
    store = MemoryStore(max_entries=2)
    user = await made(store, established=True)
    if path == "load_nowait":
        assert store.load_nowait(user, NS) == b"x"
    else:
        assert store.save_nowait(user, b"y", 100, NS) == user
    for _ in range(10):
        await made(store, established=False)
    assert await alive(store, user)


async def test_the_expiry_queue_stays_bounded_under_a_flood(clock: FakeMonotonic) -> None:
    store = MemoryStore(max_entries=100)
    for _ in range(5_000):
        await made(store, established=False)
        clock.advance(0.01)
    assert len(store) == 100
    assert len(store._expiries) <= 2 * len(store) + 64  # not one entry per session ever made
    assert await store.purge_expired() == 0
    clock.advance(100)
    assert await store.purge_expired() == 100 and len(store) == 0


def login_app(
    store: AbstractStore, *, legacy: AbstractLegacyReader | None = None
) -> web.Application:
    async def login(request: web.Request) -> web.Response:
        session = await new_session(request)
        session["user"] = request.match_info["user"]
        return web.Response(text="ok")

    async def promote(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.regenerate()
        session["user"] = request.match_info["user"]
        return web.Response(text="ok")

    async def visit(request: web.Request) -> web.Response:
        (await get_session(request))["csrf"] = "t"
        return web.Response(text="ok")

    async def logout(request: web.Request) -> web.Response:
        (await get_session(request)).invalidate()
        return web.Response(text="ok")

    async def flash_logout(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.invalidate()
        session.flash("bye")
        return web.Response(text="ok")

    async def who(request: web.Request) -> web.Response:
        return web.Response(text=(await get_session(request)).get("user", "-"))

    app = web.Application()
    setup(app, store, legacy=legacy)
    app.router.add_post("/login/{user}", login)
    app.router.add_post("/promote/{user}", promote)
    app.router.add_get("/visit", visit)
    app.router.add_post("/logout", logout)
    app.router.add_post("/flash-logout", flash_logout)
    app.router.add_get("/who", who)
    return app


def cookie_of(response: Any) -> dict[str, str]:
    return {"Cookie": f"AIOHTTP_SESSION={response.cookies['AIOHTTP_SESSION'].value}"}


@pytest.mark.parametrize("route", ["login", "promote"])
async def test_new_session_and_regenerate_make_sessions_visitors_cannot_evict(
    aiohttp_client: AiohttpClient, route: str
) -> None:
    client = await aiohttp_client(
        login_app(MemoryStore(max_entries=5)), cookie_jar=DummyCookieJar()
    )
    start = {}
    if route == "promote":  # an anonymous session first, promoted at login
        start = cookie_of(await client.get("/visit"))
    alice = cookie_of(await client.post(f"/{route}/alice", headers=start))
    for _ in range(20):
        assert (await client.get("/visit")).status == 200
    assert await (await client.get("/who", headers=alice)).text() == "alice"


async def test_a_logout_flash_session_is_anonymous(aiohttp_client: AiohttpClient) -> None:
    store = MemoryStore(max_entries=2)
    client = await aiohttp_client(login_app(store), cookie_jar=DummyCookieJar())
    alice = cookie_of(await client.post("/login/alice"))
    bob = cookie_of(await client.post("/login/bob"))
    await client.post("/flash-logout", headers=bob)  # bob's "signed out" flash: anonymous
    assert len(store._established) == 1 and len(store._anonymous) == 1
    for _ in range(5):
        assert (await client.get("/visit")).status == 200
    assert await (await client.get("/who", headers=alice)).text() == "alice"


async def test_a_store_full_of_logged_in_users_answers_503_and_logs_nobody_out(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(
        login_app(MemoryStore(max_entries=3)), cookie_jar=DummyCookieJar()
    )
    users = [cookie_of(await client.post(f"/login/u{i}")) for i in range(3)]
    for refused in (await client.get("/visit"), await client.post("/login/eve")):
        assert refused.status == 503 and refused.headers["Retry-After"] == "5"
        assert "Set-Cookie" not in refused.headers
    assert [await (await client.get("/who", headers=u)).text() for u in users] == ["u0", "u1", "u2"]
    await client.post("/logout", headers=users[0])
    assert (await client.post("/login/eve")).status == 200


async def test_a_third_party_store_without_the_keyword_still_saves_logins(
    aiohttp_client: AiohttpClient,
) -> None:
    # A store written before ``established=`` existed: its save() must never receive it.
    class OldStore(AbstractStore):
        def __init__(self) -> None:
            self.inner = MemoryStore()

        async def load(self, token: str, *, namespace: str) -> bytes | None:
            return await self.inner.load(token, namespace=namespace)

        async def save(
            self, token: str | None, data: bytes, *, ttl: int, namespace: str
        ) -> str | None:
            return await self.inner.save(token, data, ttl=ttl, namespace=namespace)

        async def delete(self, token: str, *, namespace: str) -> None:
            await self.inner.delete(token, namespace=namespace)

    store = OldStore()
    client = await aiohttp_client(login_app(store), cookie_jar=DummyCookieJar())
    alice = cookie_of(await client.post("/login/alice"))
    assert await (await client.get("/who", headers=alice)).text() == "alice"
    assert len(store.inner._anonymous) == 1  # saved, as a session of the old, single kind


async def test_a_session_moved_over_from_aiohttp_session_is_established(
    aiohttp_client: AiohttpClient,
) -> None:
    # It may be a logged-in user's session under the old library: never evicted by visitors.
    key = secrets.token_bytes(32)
    old_cookie = (
        Fernet(base64.urlsafe_b64encode(key))
        .encrypt(json.dumps({"created": int(time.time()), "session": {"user": "old"}}).encode())
        .decode()
    )
    store = MemoryStore(max_entries=3)
    client = await aiohttp_client(
        login_app(store, legacy=AiohttpSessionCookie(key)), cookie_jar=DummyCookieJar()
    )
    moved = await client.get("/who", headers={"Cookie": f"AIOHTTP_SESSION={old_cookie}"})
    assert await moved.text() == "old"
    for _ in range(10):
        assert (await client.get("/visit")).status == 200
    assert await (await client.get("/who", headers=cookie_of(moved))).text() == "old"
    # The session and the marker of its migrated legacy token (kept so that a copy of the old
    # cookie cannot migrate again): neither is evicted by visitors.
    assert len(store._established) == 2


async def test_records_kept_for_security_are_never_evicted_for_a_visitor(
    clock: FakeMonotonic,
) -> None:
    # create() is how the session layer keeps JWT deny-list entries and migrated legacy
    # tokens' markers: evicting one for a visitor's session would revive a revoked token.
    store = MemoryStore(max_entries=3)
    kept = [record_key(NS, secrets.token_urlsafe(32)) for _ in range(2)]
    for key in kept:
        assert await store.create(key, b"revoked", 60)
    visitor = await made(store, established=False)
    for _ in range(5):  # visitors push out visitors only
        assert await alive(store, await made(store, established=False))
    assert not await alive(store, visitor)
    assert [await store.get(key) for key in kept] == [b"revoked", b"revoked"]
    assert await store.create(record_key(NS, secrets.token_urlsafe(32)), b"revoked", 60)
    with pytest.raises(StoreUnavailable, match="max_entries"):  # full of them: refuse, keep
        await made(store, established=False)
    assert [await store.get(key) for key in kept] == [b"revoked", b"revoked"]
    clock.advance(61)  # they expire like any record, and make room then
    assert await alive(store, await made(store, established=False))
