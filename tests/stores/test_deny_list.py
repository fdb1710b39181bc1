"""Client-side stores with a deny list (``revocation=``): a logout that really logs out, and
a per-user cutoff that ends every session of a user (OWASP ASVS 5.0 7.4.1).

Every body runs on the four client-side stores with a deny list (the encrypted cookie and
the JWT, each with the deny list in memory and on the real Redis), with two application
instances: two store objects that share only the deny list (for Redis, two clients), as
two processes would.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import struct
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import DummyCookieJar, web

from aiohttp_sessionkit import (
    ConfigurationError,
    CookieTooLarge,
    EncryptedCookieStore,
    JWTStore,
    MemoryStore,
    SerializationError,
    StoreError,
    StoreUnavailable,
    generate_key,
    get_session,
    new_session,
    setup,
)
from aiohttp_sessionkit.abc import AbstractStore
from aiohttp_sessionkit.serializers import JSONSerializer
from aiohttp_sessionkit.session import Session
from aiohttp_sessionkit.stores.redis import RedisStore
from tests.conftest import COOKIE, StoreFactory, Wire
from tests.harness.servers import ServerHandle, free_port

WIRE = Wire("cookie")
USER_KEY = "user_id"
JSON = JSONSerializer()
#: The slow request waits for this; it sets LOADED once it has its session.
GATE = web.AppKey("gate", asyncio.Event)
LOADED = web.AppKey("loaded", asyncio.Event)


class Cutoffs:
    """The user-session capability the session layer calls (issue 23's names)."""

    def __init__(self, store: AbstractStore) -> None:
        self.store: Any = store

    async def end_user(self, user: str, *, keep: str | None = None) -> int:
        result: int = await self.store.end_user(
            user, namespace=COOKIE, last_seen=lambda payload: None, keep=keep
        )
        return result

    def handle(self, token: str) -> str | None:
        handle: str | None = self.store.handle(token, namespace=COOKIE)
        return handle

    async def end_handle(self, handle: str) -> None:
        await self.store.end_handle(handle, namespace=COOKIE)


def bind_by_user(store: Any) -> None:
    """What ``setup(..., user_key=USER_KEY)`` tells the store (issue 23's hook)."""
    store.set_user_key(USER_KEY)


def app_for(store: AbstractStore, **options: Any) -> web.Application:
    """Login (a new session bound to the user), read, write, regenerate, logout, and a slow
    write that waits for the test."""
    bind_by_user(store)
    app = web.Application()
    setup(app, store, **options)
    routes = web.RouteTableDef()
    app[GATE] = asyncio.Event()
    app[LOADED] = asyncio.Event()

    @routes.post("/login/{user}")
    async def login(request: web.Request) -> web.Response:
        session = await new_session(request)
        session[USER_KEY] = request.match_info["user"]
        return web.json_response({"ok": True})

    @routes.post("/login-in-place/{user}")
    async def login_in_place(request: web.Request) -> web.Response:
        session = await get_session(request)  # the visitor's session, data kept
        session.regenerate()
        session[USER_KEY] = request.match_info["user"]
        return web.json_response({"ok": True})

    @routes.get("/me")
    async def me(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response({"data": dict(session), "new": session.new})

    @routes.post("/set/{key}/{value}")
    async def set_value(request: web.Request) -> web.Response:
        session = await get_session(request)
        session[request.match_info["key"]] = request.match_info["value"]
        return web.json_response({"ok": True})

    @routes.post("/slow-set")
    async def slow_set(request: web.Request) -> web.Response:
        session = await get_session(request)
        request.app[LOADED].set()
        await request.app[GATE].wait()
        session["late"] = "write"
        return web.json_response({"ok": True})

    @routes.post("/regenerate")
    async def regenerate(request: web.Request) -> web.Response:
        (await get_session(request)).regenerate()
        return web.json_response({"ok": True})

    @routes.post("/logout")
    async def logout(request: web.Request) -> web.Response:
        (await get_session(request)).invalidate()
        return web.json_response({"ok": True})

    app.add_routes(routes)
    return app


class Instance:
    """One application instance (a process) under the test client."""

    def __init__(self, client: Any, store: AbstractStore) -> None:
        self.client = client
        self.store = store
        self.users = Cutoffs(store)

    async def post(self, path: str, token: str | None = None) -> tuple[Any, str | None]:
        response = await self.client.post(path, headers=WIRE.present(token))
        assert response.status == 200, response.status
        return response, WIRE.follow(response, token)

    async def login(self, user: str, token: str | None = None) -> str:
        _, issued = await self.post(f"/login/{user}", token)
        assert issued is not None and issued != token
        return issued

    async def me(self, token: str | None) -> dict[str, Any]:
        response = await self.client.get("/me", headers=WIRE.present(token))
        assert response.status == 200, response.status
        body: dict[str, Any] = await response.json()
        return body

    async def user_of(self, token: str) -> str | None:
        body = await self.me(token)
        return None if body["new"] else body["data"].get(USER_KEY)


@pytest.fixture
async def instances(
    aiohttp_client: Any, deny_list_store_factory: StoreFactory
) -> tuple[Instance, Instance]:
    """Two application instances whose stores share the deny list and nothing else."""
    pair = []
    for _ in range(2):
        store = deny_list_store_factory()
        client = await aiohttp_client(app_for(store), cookie_jar=DummyCookieJar())
        pair.append(Instance(client, store))
    return pair[0], pair[1]


FRESH: dict[str, Any] = {"data": {}, "new": True}


# -- a logout that logs out, everywhere ---------------------------------------------------------


async def test_a_logged_out_token_opens_nothing_in_another_app_instance(
    instances: tuple[Instance, Instance],
) -> None:
    first, second = instances
    token = await first.login("alice")
    assert await second.user_of(token) == "alice"
    _, after = await second.post("/logout", token)
    assert after is None  # the client is told to drop it
    assert await first.me(token) == FRESH
    assert await second.me(token) == FRESH


async def test_a_copy_taken_before_regenerate_opens_nothing_in_another_app_instance(
    instances: tuple[Instance, Instance],
) -> None:
    first, second = instances
    token = await first.login("alice")
    _, copy = await first.post("/set/cart/book", token)  # a re-issue: the same session
    assert copy is not None and copy != token
    _, fresh = await first.post("/regenerate", copy)
    assert fresh is not None and fresh not in (token, copy)
    for stale in (token, copy):
        assert await second.me(stale) == FRESH
    assert (await second.me(fresh))["data"] == {USER_KEY: "alice", "cart": "book"}


@pytest.mark.parametrize("how", ["logout", "end-user"])
async def test_a_slower_request_cannot_bring_back_a_session_ended_meanwhile(
    instances: tuple[Instance, Instance], how: str
) -> None:
    """A request that loaded the session before it was ended (by a logout, or by ending the
    user's sessions) in another process, and saves after: it hands out nothing."""
    first, second = instances
    token = await first.login("alice")
    slow = asyncio.create_task(first.client.post("/slow-set", headers=WIRE.present(token)))
    await first.client.app[LOADED].wait()
    if how == "logout":
        await second.post("/logout", token)  # another process: the first one's ENDED is blind
    else:
        await second.users.end_user("alice")
    first.client.app[GATE].set()
    response = await slow
    assert response.status == 200
    assert "Set-Cookie" not in response.headers  # neither a token nor a deletion
    assert await first.me(token) == FRESH
    assert await second.me(token) == FRESH


# -- ending every session of a user --------------------------------------------------------------


async def test_ending_a_user_refuses_all_their_tokens_in_every_process_and_no_one_elses(
    instances: tuple[Instance, Instance],
) -> None:
    first, second = instances
    laptop = await first.login("alice")
    _, laptop_later = await first.post("/set/cart/book", laptop)  # a re-issue of it
    phone = await second.login("alice")
    bob = await first.login("bob")
    assert laptop_later is not None
    assert await second.users.end_user("alice") == 0  # a client-side store cannot count
    for instance in (first, second):
        for token in (laptop, laptop_later, phone):
            assert await instance.me(token) == FRESH
        assert await instance.user_of(bob) == "bob"
    again = await first.login("alice")  # a login after the cutoff is alice's again
    assert await second.user_of(again) == "alice"


async def test_a_token_re_issued_after_the_cutoff_keeps_the_birth_of_its_session(
    deny_list_store_factory: StoreFactory,
) -> None:
    """Even a process that re-issued an old session after the cutoff (one that missed it:
    here, one whose deny list is another) hands out a token that is still refused: a
    re-issue keeps when the session became the user's."""
    store = deny_list_store_factory()
    bind_by_user(store)
    blind: Any = copy.copy(store)  # the same keys, another deny list
    blind.revocation = MemoryStore()
    token = await _issue(store, {USER_KEY: "alice"})
    await Cutoffs(store).end_user("alice")
    session = await _open(blind, token)
    assert session is not None
    session["n"] = 1
    reissued = await blind.save(
        token, blind.dump(session, JSON, session.created), ttl=600, namespace=COOKIE
    )
    assert reissued is not None and reissued != token
    assert await _open(blind, reissued) is not None  # its own deny list has no cutoff
    assert await _open(store, reissued) is None


async def test_keep_spares_the_named_session_of_the_user_only(
    instances: tuple[Instance, Instance],
) -> None:
    first, second = instances
    kept = await first.login("alice")
    other = await first.login("alice")
    handle = second.users.handle(kept)
    assert handle is not None
    await second.users.end_user("alice", keep=handle)
    assert await first.user_of(kept) == "alice"
    _, kept_later = await first.post("/set/cart/book", kept)  # its re-issues too
    assert kept_later is not None and await second.user_of(kept_later) == "alice"
    assert await first.me(other) == FRESH
    # A later cutoff replaces the earlier one, and what it spared.
    await second.users.end_user("alice")
    assert await first.me(kept_later) == FRESH


async def test_a_visitor_who_logs_in_right_after_the_cutoff_stays_logged_in(
    instances: tuple[Instance, Instance],
) -> None:
    """A session older than the cutoff that becomes the user's after it (regenerate() at
    login keeps the session's creation time) is not refused: what counts is when it became
    the user's, in microseconds."""
    first, second = instances
    _, visitor = await first.post("/set/cart/book")
    assert visitor is not None
    await second.users.end_user("alice")
    _, logged_in = await first.post("/login-in-place/alice", visitor)
    assert logged_in is not None
    body = await second.me(logged_in)
    assert body == {"data": {"cart": "book", USER_KEY: "alice"}, "new": False}


async def test_end_handle_ends_that_one_session_everywhere(
    instances: tuple[Instance, Instance],
) -> None:
    first, second = instances
    laptop = await first.login("alice")
    phone = await first.login("alice")
    handle = first.users.handle(laptop)
    assert handle is not None and len(handle) == 64
    assert laptop not in handle  # a handle is not the token
    await second.users.end_handle(handle)
    assert await first.me(laptop) == FRESH
    assert await second.user_of(phone) == "alice"


@pytest.mark.parametrize(
    "handle",
    ["", "x", "A" * 64, "g" * 64, "0" * 63, "0" * 65, "../" * 30, "0" * 64 + "\n", "é" * 64],
)
async def test_a_malformed_handle_ends_nothing(
    instances: tuple[Instance, Instance], handle: str
) -> None:
    first, second = instances
    token = await first.login("alice")
    await second.users.end_handle(handle)
    assert await first.user_of(token) == "alice"


async def test_a_user_id_of_10_kb_is_a_clear_error_to_issue_and_harmless_to_end(
    instances: tuple[Instance, Instance],
) -> None:
    """The token carries the user id: 10 KB fits neither a cookie nor a JWT header, and the
    save says so. Ending such a user (a hash of the id is its key) ends no one else."""
    first, second = instances
    huge = "u" * 10_000
    session = first.store.session_class(data={USER_KEY: huge})
    session._lineage = secrets.token_hex(8)
    with pytest.raises((CookieTooLarge, SerializationError)):
        await first.store.save(
            None, first.store.dump(session, JSON, session.created), ttl=600, namespace=COOKIE
        )
    alice = await first.login("alice")
    await second.users.end_user(huge)
    await second.users.end_user("u" * 9_999)
    assert await first.user_of(alice) == "alice"


async def test_an_int_user_id_is_its_decimal_string(
    deny_list_store_factory: StoreFactory,
) -> None:
    store = deny_list_store_factory()
    bind_by_user(store)
    token = await _issue(store, {USER_KEY: 42})
    flag = await _issue(store, {USER_KEY: True})  # a bool is no user id: bound to no one
    await Cutoffs(store).end_user("42")
    assert await _open(store, token) is None
    await Cutoffs(store).end_user("True")
    assert await _open(store, flag) is not None


async def test_listing_a_users_sessions_says_a_server_side_store_is_needed(
    deny_list_store_factory: StoreFactory,
) -> None:
    store: Any = deny_list_store_factory()
    assert store.user_cutoff is True and store.revocable is True
    with pytest.raises(StoreError, match="server-side store"):
        await store.user_records("alice", namespace=COOKIE, last_seen=lambda payload: None)


@pytest.mark.parametrize(
    "build",
    [
        lambda: EncryptedCookieStore(generate_key()),
        lambda: JWTStore(secrets.token_bytes(32)),
    ],
    ids=["cookie", "jwt"],
)
def test_user_key_without_a_deny_list_is_refused_with_the_fix(build: Any) -> None:
    store = build()
    assert store.user_cutoff is False and store.revocable is False
    with pytest.raises(ConfigurationError, match=r"revocation=<a server-side store>"):
        store.set_user_key(USER_KEY)


def test_one_store_binds_by_one_user_key() -> None:
    store = EncryptedCookieStore(generate_key(), revocation=MemoryStore())
    store.set_user_key(USER_KEY)
    store.set_user_key(USER_KEY)  # a second session on the same store, the same key
    with pytest.raises(ConfigurationError, match="its own store"):
        store.set_user_key("account")


# -- an unreachable deny list --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cookie", "jwt"])
async def test_an_unreachable_deny_list_answers_503_and_changes_nothing(
    aiohttp_client: Any, kind: str
) -> None:
    down = RedisStore(f"redis://127.0.0.1:{free_port()}/0", key_prefix="down:")
    key, secret = generate_key(), secrets.token_bytes(32)
    store: AbstractStore
    if kind == "cookie":
        healthy: AbstractStore = EncryptedCookieStore(key, revocation=MemoryStore())
        store = EncryptedCookieStore(key, revocation=down)
    else:
        healthy = JWTStore(secret, revocation=MemoryStore())
        store = JWTStore(secret, revocation=down)
    bind_by_user(healthy)
    token = await _issue(healthy, {USER_KEY: "alice"})
    client = await aiohttp_client(app_for(store, store_timeout=10), cookie_jar=DummyCookieJar())
    for method, path in [("GET", "/me"), ("POST", "/set/a/b"), ("POST", "/logout")]:
        response = await client.request(method, path, headers=WIRE.present(token))
        assert response.status == 503
        assert response.headers["Retry-After"]
        assert "Set-Cookie" not in response.headers  # the client keeps its token
    with pytest.raises(StoreUnavailable):
        await Cutoffs(store).end_user("alice")
    with pytest.raises(StoreUnavailable):
        await store.delete(token, namespace=COOKIE)
    assert await _open(healthy, token) is not None  # nothing was ended anywhere
    await store.close()


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["stopped", "frozen"])
@pytest.mark.parametrize("kind", ["cookie", "jwt"])
async def test_a_deny_list_that_fails_mid_request_answers_503_and_hands_out_nothing(
    aiohttp_client: Any, redis_server: ServerHandle, kind: str, fault: str
) -> None:
    """The deny list on a real Redis that is stopped (or frozen) between a request's load
    and its write: that write answers 503 and sends no token; so do requests that load
    meanwhile; once it is back, the session is as it was (no late write landed)."""
    if redis_server.external:
        pytest.skip("an external server cannot be stopped or frozen")
    deny_list = RedisStore(redis_server.url, key_prefix=f"deny-{uuid.uuid4().hex[:8]}:")
    store: AbstractStore = (
        EncryptedCookieStore(generate_key(), revocation=deny_list)
        if kind == "cookie"
        else JWTStore(secrets.token_bytes(32), revocation=deny_list)
    )
    app = app_for(store, store_timeout=0.5)
    client = Instance(await aiohttp_client(app, cookie_jar=DummyCookieJar()), store)
    token = await client.login("alice")
    slow = asyncio.create_task(client.client.post("/slow-set", headers=WIRE.present(token)))
    try:
        await asyncio.wait_for(app[LOADED].wait(), 10)
        if fault == "stopped":
            await asyncio.to_thread(redis_server.stop)
        else:
            redis_server.pause()
        app[GATE].set()
        async with asyncio.timeout(10):
            responses = [await slow]
            for method, path in [("GET", "/me"), ("POST", "/logout")]:
                responses.append(
                    await client.client.request(method, path, headers=WIRE.present(token))
                )
        for response in responses:
            assert response.status == 503
            assert "Set-Cookie" not in response.headers
        if fault == "stopped":  # (frozen, only the session layer's time budget ends a call)
            with pytest.raises(StoreUnavailable):
                await Cutoffs(store).end_user("alice")
    finally:
        redis_server.resume()
        if not redis_server.is_running:
            await asyncio.to_thread(redis_server.start)
    # The test Redis keeps nothing across a restart: the session is the cookie's, unchanged.
    assert (await client.me(token))["data"] == {USER_KEY: "alice"}
    await store.close()


# -- what a check costs --------------------------------------------------------------------------


@pytest.fixture
async def redis_deny_list(redis_server: ServerHandle) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_server.url, key_prefix=f"deny-{uuid.uuid4().hex[:8]}:")
    yield store
    await store.close()


@pytest.mark.parametrize("kind", ["cookie", "jwt"])
async def test_a_bound_session_is_checked_in_one_redis_round_trip(
    redis_server: ServerHandle, redis_deny_list: RedisStore, kind: str
) -> None:
    """Deny list and cutoff are read together: one MGET, as for an unbound session."""
    store: AbstractStore = (
        EncryptedCookieStore(generate_key(), revocation=redis_deny_list)
        if kind == "cookie"
        else JWTStore(secrets.token_bytes(32), revocation=redis_deny_list)
    )
    bind_by_user(store)
    bound = await _issue(store, {USER_KEY: "alice"})
    unbound = await _issue(store, {"cart": "book"})
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await store.load(unbound, namespace=COOKIE) is not None  # connected
        for token in (bound, unbound):
            before = await _calls(raw)
            assert await store.load(token, namespace=COOKIE) is not None
            after = await _calls(raw)
            assert after["mget"] == before["mget"] + 1
            assert after["get"] == before["get"]
    finally:
        await raw.aclose()


@pytest.mark.parametrize("kind", ["cookie", "jwt"])
async def test_entries_live_as_long_as_setup_says_a_session_can(
    redis_server: ServerHandle, redis_deny_list: RedisStore, kind: str
) -> None:
    """``setup`` tells the store its absolute timeout: a cutoff lives that long, and a
    logged-out session's entry until the session's creation plus that."""
    store: AbstractStore = (
        EncryptedCookieStore(generate_key(), revocation=redis_deny_list)
        if kind == "cookie"
        else JWTStore(secrets.token_bytes(32), revocation=redis_deny_list)
    )
    setup(web.Application(), store, idle_timeout=600, absolute_timeout=5000)
    bind_by_user(store)
    token = await _issue(store, {USER_KEY: "alice"})
    await Cutoffs(store).end_user("alice")
    await store.delete(token, namespace=COOKIE)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        keys = [k async for k in raw.scan_iter(match=redis_deny_list.key_prefix + "*")]
        assert len(keys) == 2  # the cutoff and the session's entry: hashed keys only
        assert all(b"alice" not in key for key in keys)
        for key in keys:
            assert 4990 <= await raw.ttl(key) <= 5000
    finally:
        await raw.aclose()


async def _calls(raw: Any) -> dict[str, int]:
    stats: dict[str, Any] = await raw.info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("get", "mget")}


# -- the encrypted cookie's own cases ------------------------------------------------------------


def test_the_cookie_store_is_local_and_unrevocable_only_without_a_deny_list() -> None:
    plain = EncryptedCookieStore(generate_key())
    assert (plain.local, plain.revocable, plain.revocation) == (True, False, None)
    deny_list = MemoryStore()
    revoking = EncryptedCookieStore(generate_key(), revocation=deny_list)
    assert (revoking.local, revoking.revocable, revoking.revocation) == (False, True, deny_list)


@pytest.mark.parametrize(
    "revocation", [object(), "redis://127.0.0.1:6379/0", EncryptedCookieStore(generate_key())]
)
def test_the_deny_list_must_be_a_server_side_store(revocation: Any) -> None:
    with pytest.raises(ConfigurationError, match="server-side store"):
        EncryptedCookieStore(generate_key(), revocation=revocation)


async def test_a_cookie_that_does_not_open_puts_nothing_on_the_deny_list() -> None:
    deny_list = MemoryStore()
    store = EncryptedCookieStore(generate_key(), revocation=deny_list)
    stranger = await _issue(EncryptedCookieStore(generate_key()), {"a": 1})
    for token in ("", "garbage", "A" * 43, stranger, stranger[:-2]):
        await store.delete(token, namespace=COOKIE)
    assert len(deny_list) == 0


@pytest.mark.parametrize(
    "plaintext",
    [
        b"\xb5",  # the frame's marker alone
        b"\xb5" + struct.pack(">Q", 1),  # cut inside the frame
        b"\xb5" + struct.pack(">QH", 1, 50) + b"alice",  # a user id longer than what follows
        b"\xb5" + struct.pack(">QH", 1, 2) + b"\xff\xfe",  # a user id that is not UTF-8
    ],
    ids=["marker", "cut", "short-user", "not-utf8"],
)
async def test_a_malformed_user_frame_opens_nothing(plaintext: bytes) -> None:
    """Only this store seals frames, so these need the key; the parse is strict anyway."""
    key = generate_key()
    for store in (
        EncryptedCookieStore(key, revocation=MemoryStore()),
        EncryptedCookieStore(key),
    ):
        # Sealed as it is: save() would seal such a payload behind an escape frame.
        token = EncryptedCookieStore(key)._ring.seal(plaintext, COOKIE.encode())
        fresh = EncryptedCookieStore(key, revocation=store.revocation)  # nothing cached
        assert await fresh.load(token, namespace=COOKIE) is None


async def test_a_bound_cookie_still_opens_after_the_deny_list_is_dropped() -> None:
    key = generate_key()
    revoking = EncryptedCookieStore(key, revocation=MemoryStore())
    revoking.set_user_key(USER_KEY)
    token = await _issue(revoking, {USER_KEY: "alice", "cart": "book"})
    session = await _open(EncryptedCookieStore(key), token)
    assert session is not None and dict(session) == {USER_KEY: "alice", "cart": "book"}


async def test_a_version_1_cookie_is_ended_by_a_logout_of_its_re_issue(
    aiohttp_client: Any,
) -> None:
    """A cookie sealed before payloads carried a lineage id gets one named after it, so a
    logout with any later copy of the session ends the old cookie too."""
    key = generate_key()
    session = Session(data={USER_KEY: "alice"})
    payload = struct.pack(">BIIi", 1, session.created, session.created, -1) + JSON.dumps(
        [dict(session)]
    )
    old = await EncryptedCookieStore(key).save(None, payload, ttl=600, namespace=COOKIE)
    assert old is not None
    store = EncryptedCookieStore(key, revocation=MemoryStore())
    client = Instance(await aiohttp_client(app_for(store), cookie_jar=DummyCookieJar()), store)
    assert await client.user_of(old) == "alice"
    _, later = await client.post("/set/cart/book", old)
    assert later is not None and later != old
    await client.post("/logout", later)
    assert await client.me(old) == FRESH


# -- helpers -------------------------------------------------------------------------------------


async def _issue(store: AbstractStore, data: dict[str, Any]) -> str:
    """A new session holding ``data``, saved as the session layer would save it (a cookie
    session gets its lineage id from the session layer)."""
    session = store.session_class(data=dict(data))
    session._lineage = secrets.token_hex(8)
    payload = store.dump(session, JSON, session.created)
    token = await store.save(None, payload, ttl=600, namespace=COOKIE)
    assert token is not None
    return token


async def _open(store: AbstractStore, token: str) -> Session | None:
    payload = await store.load(token, namespace=COOKIE)
    if payload is None:
        return None
    return store.restore(
        payload, JSON, identity=None, idle_timeout=3600, absolute_timeout=30 * 24 * 3600
    )
