"""The ServerStore API every server-side driver must honour, one body per behaviour.

Driver files keep what only their driver can show (TTLs in Redis, DDL, indexes, pools).
"""

from __future__ import annotations

from conftest import StoreFactory

from aiohttp_sessionkit.ids import is_valid_session_id, new_session_id, record_key

NS = "AIOHTTP_SESSION"


async def test_save_load_update_delete_round_trip(server_store_factory: StoreFactory) -> None:
    store = server_store_factory()
    token = await store.save(None, b"first", ttl=60, namespace=NS)
    assert token is not None and is_valid_session_id(token)
    assert await store.load(token, namespace=NS) == b"first"
    assert await store.save(token, b"second", ttl=60, namespace=NS) == token
    assert await store.load(token, namespace=NS) == b"second"
    await store.delete(token, namespace=NS)
    assert await store.load(token, namespace=NS) is None
    await store.delete(token, namespace=NS)  # idempotent


async def test_new_saves_get_distinct_tokens(server_store_factory: StoreFactory) -> None:
    store = server_store_factory()
    first = await store.save(None, b"a", ttl=60, namespace=NS)
    second = await store.save(None, b"b", ttl=60, namespace=NS)
    assert first is not None and second is not None and first != second
    assert await store.load(first, namespace=NS) == b"a"
    assert await store.load(second, namespace=NS) == b"b"


async def test_binary_payload_survives_unchanged(server_store_factory: StoreFactory) -> None:
    store = server_store_factory()
    payload = bytes(range(256)) * 16
    token = await store.save(None, payload, ttl=60, namespace=NS)
    assert token is not None
    assert await store.load(token, namespace=NS) == payload


async def test_a_token_opens_nothing_under_another_namespace(
    server_store_factory: StoreFactory,
) -> None:
    store = server_store_factory()
    token = await store.save(None, b"x", ttl=60, namespace="cookie_a")
    assert token is not None
    assert await store.load(token, namespace="cookie_b") is None
    assert await store.save(token, b"y", ttl=60, namespace="cookie_b") is None
    assert await store.load(token, namespace="cookie_a") == b"x"


async def test_unknown_and_malformed_tokens_load_nothing_and_update_nothing(
    server_store_factory: StoreFactory,
) -> None:
    store = server_store_factory()
    unknown = new_session_id()
    assert await store.load(unknown, namespace=NS) is None
    assert await store.save(unknown, b"planted", ttl=60, namespace=NS) is None
    assert await store.load(unknown, namespace=NS) is None  # an update never creates
    for bad in ("", "*", "../../etc/passwd", "x" * 1000, unknown[:-1]):
        assert await store.load(bad, namespace=NS) is None
        assert await store.save(bad, b"planted", ttl=60, namespace=NS) is None
        await store.delete(bad, namespace=NS)


async def test_create_refuses_a_live_key_and_update_refuses_a_missing_one(
    server_store_factory: StoreFactory,
) -> None:
    store = server_store_factory()
    from aiohttp_sessionkit import ServerStore

    assert isinstance(store, ServerStore)
    token = await store.save(None, b"original", ttl=60, namespace=NS)
    assert token is not None
    key = record_key(NS, token)
    assert await store.create(key, b"overwrite", 60) is False
    assert await store.load(token, namespace=NS) == b"original"
    await store.delete(token, namespace=NS)
    assert await store.update(key, b"resurrected", 60) is False
    assert await store.get(key) is None
    await store.remove(key)  # removing a missing record is a no-op
