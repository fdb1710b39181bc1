"""JWTStore's cache of verified tokens, and its load/save without a coroutine.

A hit skips the signature check and the strict parse, never the claim checks: expiry, the
session name a token is bound to and the deny list are checked on every request.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from aiohttp_sessionkit import (
    ConfigurationError,
    HeaderTransport,
    JWTStore,
    MemoryStore,
    get_session,
    save_session,
    setup,
)
from aiohttp_sessionkit.abc import mirrors
from aiohttp_sessionkit.serializers import JSONSerializer
from aiohttp_sessionkit.stores.jwt import JWTSession
from aiohttp_sessionkit.stores.jwt.jose import _hmac_signer
from tests.conftest import FakeClock

NS = "AIOHTTP_SESSION"
SECRET = secrets.token_bytes(32)
JSON = JSONSerializer()
DAY = 24 * 3600


class CountingAlgorithm:
    """The store's real PyJWT algorithm, counting signature checks."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.verified = 0

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        self.verified += 1
        return bool(self.inner.verify(msg, key, sig))

    def sign(self, msg: bytes, key: Any) -> bytes:
        return bytes(self.inner.sign(msg, key))


def counting(store: JWTStore) -> CountingAlgorithm:
    algorithm = CountingAlgorithm(store._algorithm)
    store._algorithm = algorithm  # type: ignore[assignment]
    return algorithm


async def issue(
    store: JWTStore, data: dict[str, Any], *, ttl: int = 600, namespace: str = NS
) -> str:
    session = JWTSession()
    session.update(data)
    draft = store.dump(session, JSON, int(time.time()))
    token = await store.save(None, draft, ttl=ttl, namespace=namespace)
    assert token is not None
    return token


async def data_of(store: JWTStore, token: str, namespace: str = NS) -> dict[str, Any] | None:
    payload = await store.load(token, namespace=namespace)
    if payload is None:
        return None
    session = store.restore(
        payload, JSON, identity=None, idle_timeout=DAY, absolute_timeout=30 * DAY
    )
    return None if session is None else dict(session)


def altered(token: str, at: int, char: str) -> str:
    at %= len(token)
    if token[at] == char:
        char = "B" if char != "B" else "C"
    return token[:at] + char + token[at + 1 :]


async def test_a_token_the_store_issued_opens_without_a_signature_check() -> None:
    store = JWTStore(SECRET)
    algorithm = counting(store)
    token = await issue(store, {"sub": "alice"})
    assert await data_of(store, token) == {"sub": "alice"}
    assert await data_of(store, token) == {"sub": "alice"}
    assert algorithm.verified == 0


async def test_a_token_verified_once_is_not_verified_again() -> None:
    token = await issue(JWTStore(SECRET), {"sub": "alice"})
    store = JWTStore(SECRET)  # another process: its cache starts empty
    algorithm = counting(store)
    for _ in range(3):
        assert await data_of(store, token) == {"sub": "alice"}
    assert algorithm.verified == 1


async def test_a_token_that_fails_verification_is_not_cached() -> None:
    token = altered(await issue(JWTStore(SECRET), {"sub": "mallory"}), -3, "A")
    store = JWTStore(SECRET)
    algorithm = counting(store)
    for _ in range(2):
        assert await data_of(store, token) is None
    assert algorithm.verified == 2
    assert len(store._verified) == 0


async def test_changing_a_restored_session_never_changes_the_cached_token() -> None:
    store = JWTStore(SECRET)
    token = await issue(store, {"sub": "alice", "roles": ["reader"]})
    payload = await store.load(token, namespace=NS)
    session = store.restore(payload, JSON, identity=None, idle_timeout=DAY, absolute_timeout=DAY)
    assert session is not None
    session["roles"].append("admin")  # in place, never saved
    session["sub"] = "mallory"
    assert await data_of(store, token) == {"sub": "alice", "roles": ["reader"]}


async def test_a_cached_token_still_expires(clock: FakeClock) -> None:
    store = JWTStore(SECRET)
    algorithm = counting(store)
    token = await issue(store, {"sub": "alice"}, ttl=300)
    clock.advance(299)
    assert await data_of(store, token) == {"sub": "alice"}
    clock.advance(1)
    assert await data_of(store, token) is None
    assert algorithm.verified == 0  # both answers came from the cache


async def test_an_altered_copy_of_a_cached_token_does_not_open() -> None:
    store = JWTStore(SECRET)
    token = await issue(store, {"sub": "alice"})
    assert await data_of(store, token) == {"sub": "alice"}
    header, payload, _ = token.split(".")
    copies = [
        altered(token, len(header) // 2, "A"),
        altered(token, len(header) + 1 + len(payload) // 2, "A"),
        altered(token, -3, "A"),
        token + "A",
        token[:-1],
        f"{header}.{payload}.",
    ]
    for copy in copies:
        assert await data_of(store, copy) is None, copy


async def test_a_cached_token_opens_under_its_own_session_name_only() -> None:
    store = JWTStore(SECRET)
    token = await issue(store, {"sub": "alice"}, namespace="a")
    assert await data_of(store, token, namespace="a") == {"sub": "alice"}
    assert await data_of(store, token, namespace="b") is None
    assert await data_of(store, token, namespace=NS) is None


async def test_a_revoked_token_is_refused_though_it_is_cached() -> None:
    store = JWTStore(SECRET, revocation=MemoryStore())
    algorithm = counting(store)
    token = await issue(store, {"sub": "alice"})
    assert await data_of(store, token) == {"sub": "alice"}
    await store.delete(token, namespace=NS)
    assert await data_of(store, token) is None
    assert algorithm.verified == 0


async def test_the_cache_is_bounded_and_starts_over_when_full() -> None:
    tokens = [await issue(JWTStore(SECRET), {"i": i}) for i in range(3)]
    store = JWTStore(SECRET, cache_size=2)
    for token in tokens:
        await store.load(token, namespace=NS)
        assert len(store._verified) <= 2
    assert set(store._verified) == {(NS, tokens[2])}
    assert await data_of(store, tokens[0]) == {"i": 0}  # dropped, not refused
    assert set(store._verified) == {(NS, tokens[2]), (NS, tokens[0])}


async def test_cache_size_zero_caches_nothing_and_still_opens() -> None:
    store = JWTStore(SECRET, cache_size=0)
    algorithm = counting(store)
    token = await issue(store, {"sub": "alice"})
    for _ in range(2):
        assert await data_of(store, token) == {"sub": "alice"}
    assert algorithm.verified == 2
    assert len(store._verified) == 0


@pytest.mark.parametrize("size", [-1, 1.5, True, "10", None])
def test_cache_size_must_be_a_whole_number(size: object) -> None:
    with pytest.raises(ConfigurationError, match="cache_size"):
        JWTStore(SECRET, cache_size=size)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    datas=st.lists(st.dictionaries(st.sampled_from("abc"), st.integers()), min_size=1, max_size=4),
    edits=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 400), st.sampled_from("AZ_-9.")), max_size=8
    ),
    names=st.lists(st.sampled_from(["a", NS]), min_size=1, max_size=6),
)
def test_with_or_without_the_cache_every_token_opens_the_same(
    datas: list[dict[str, int]], edits: list[tuple[int, int, str]], names: list[str]
) -> None:
    async def check() -> None:
        cached = JWTStore(SECRET, cache_size=3)
        uncached = JWTStore(SECRET, cache_size=0)
        tokens = [await issue(cached, data, namespace="a") for data in datas]
        for which, at, char in edits:  # altered copies, some of them of cached tokens
            tokens.append(altered(tokens[which % len(tokens)], at, char))
        for round_ in range(2):
            for i, token in enumerate(tokens):
                namespace = names[(i + round_) % len(names)]
                assert await data_of(cached, token, namespace) == await data_of(
                    uncached, token, namespace
                )

    asyncio.run(check())


# -- load/save without a coroutine --------------------------------------------------------------


async def test_load_nowait_and_save_nowait_give_what_load_and_save_give() -> None:
    store = JWTStore(SECRET)
    assert store.local
    session = JWTSession()
    session["sub"] = "alice"
    draft = store.dump(session, JSON, int(time.time()))
    token = store.save_nowait(None, draft, 600, NS)
    assert token is not None
    via_load = await store.load(token, namespace=NS)
    assert via_load is not None
    assert store.load_nowait(token, NS) == via_load
    assert store.load_nowait(token, "other") is None
    assert store.load_nowait(token[:-2], NS) is None
    refreshed = store.save_nowait(token, store.dump(session, JSON, int(time.time())), 600, NS)
    assert refreshed is not None and refreshed != token
    assert await data_of(store, refreshed) == {"sub": "alice"}


async def test_a_store_with_a_deny_list_is_not_local_and_has_no_nowait_path() -> None:
    store = JWTStore(SECRET, revocation=MemoryStore())
    assert not store.local  # every load asks the deny list
    token = await issue(store, {"sub": "alice"})
    with pytest.raises(RuntimeError, match="deny list"):
        store.load_nowait(token, NS)
    with pytest.raises(RuntimeError, match="deny list"):
        store.save_nowait(None, store.dump(JWTSession(), JSON, int(time.time())), 600, NS)


class CountingNowait(JWTStore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    async def load(self, token: str, *, namespace: str) -> Any:
        self.calls.append("load")
        return await super().load(token, namespace=namespace)

    async def save(self, token: str | None, data: Any, *, ttl: int, namespace: str) -> str | None:
        self.calls.append("save")
        return await super().save(token, data, ttl=ttl, namespace=namespace)

    # Declared as the twins of this class's own load and save (abc.mirrors).
    @mirrors(load)
    def load_nowait(self, token: str, namespace: str) -> Any:
        self.calls.append("load_nowait")
        return super().load_nowait(token, namespace)

    @mirrors(save)
    def save_nowait(self, token: str | None, data: Any, ttl: int, namespace: str) -> str | None:
        self.calls.append("save_nowait")
        return super().save_nowait(token, data, ttl, namespace)


async def test_the_session_layer_reads_and_writes_through_the_nowait_path(
    aiohttp_client: Any,
) -> None:
    store = CountingNowait(SECRET)
    app = web.Application()
    setup(app, store, transport=HeaderTransport())

    async def login(request: web.Request) -> web.Response:
        (await get_session(request))["sub"] = "alice"
        return web.Response(text=await save_session(request) or "")

    async def bump(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["n"] = session.get("n", 0) + 1
        return web.json_response(dict(session))

    app.router.add_post("/login", login)
    app.router.add_post("/bump", bump)
    client = await aiohttp_client(app)
    token = await (await client.post("/login")).text()
    store.calls.clear()
    response = await client.post("/bump", headers={"Authorization": f"Bearer {token}"})
    assert await response.json() == {"sub": "alice", "n": 1}
    assert response.headers["Session-Token"] != token
    # The class overriding load and save also declares twins of them, so they are what ran.
    assert store.calls == ["load_nowait", "save_nowait"]


# -- the HMAC signer, keyed once ----------------------------------------------------------------


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("key_length", [32, 48, 63, 64, 65, 127, 128, 129, 300])
def test_the_hmac_signer_matches_the_standard_library(hash_name: str, key_length: int) -> None:
    # Key lengths around both block sizes (64 and 128 bytes): shorter keys are padded,
    # longer ones hashed first.
    key = secrets.token_bytes(key_length)
    sign = _hmac_signer(key, hash_name)
    for message in (b"", b"a", secrets.token_bytes(55), secrets.token_bytes(1000)):
        assert sign(message) == hmac.digest(key, message, hash_name)
    assert sign(b"one") != sign(b"two")
    assert sign(b"again") == sign(b"again")  # the keyed state is copied, never consumed


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_tokens_signed_with_the_keyed_signer_verify_in_pyjwt(algorithm: str) -> None:
    import jwt as pyjwt

    key = secrets.token_bytes({"HS256": 32, "HS384": 48, "HS512": 64}[algorithm] + 100)
    store = JWTStore(key, algorithm=algorithm)
    session = JWTSession()
    session["sub"] = "alice"
    token = store.save_nowait(None, store.dump(session, JSON, int(time.time())), 600, NS)
    assert token is not None
    claims = pyjwt.decode(token, key, algorithms=[algorithm])
    assert claims["sub"] == "alice"
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(token, key[:-1] + bytes([key[-1] ^ 1]), algorithms=[algorithm])
