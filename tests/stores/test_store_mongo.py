"""MongoStore against a real MongoDB wire-protocol server (FerretDB), with both drivers."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import InvalidOperation
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)
from pymongo.write_concern import WriteConcern

from aiohttp_sessionkit.exceptions import ConfigurationError, StoreUnavailable
from aiohttp_sessionkit.ids import record_key
from aiohttp_sessionkit.stores.mongo import MongoStore
from tests.harness.servers import mongo_server  # noqa: F401

NS = "session"
TTL = 3600
WARNING_TEXT = "could not create a TTL index"


async def close_client(client: Any) -> None:
    if isinstance(client, AsyncMongoClient):
        await client.close()
    else:
        client.close()  # Motor's close() is synchronous


@pytest.fixture(params=["pymongo", "motor"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def client(driver: str, mongo_server: Any) -> AsyncIterator[Any]:  # noqa: F811
    """A client of the parametrized kind, made inside the test's event loop."""
    options: dict[str, Any] = {"serverSelectionTimeoutMS": 2000, "connectTimeoutMS": 2000}
    made: Any
    if driver == "pymongo":
        made = AsyncMongoClient(mongo_server.url, tz_aware=True, **options)
    else:
        import motor.motor_asyncio as motor_asyncio

        made = motor_asyncio.AsyncIOMotorClient(mongo_server.url, tz_aware=True, **options)
    yield made
    await close_client(made)


@pytest.fixture
async def db_name(client: Any) -> AsyncIterator[str]:
    """A database of this test's own, dropped afterwards."""
    name = f"sk_{uuid.uuid4().hex[:16]}"
    yield name
    await client.drop_database(name)


@pytest.fixture
def raw(client: Any, db_name: str) -> Any:
    """The sessions collection as seen directly through the driver."""
    return client[db_name]["sessions"]


@pytest.fixture
async def store(client: Any, db_name: str) -> AsyncIterator[MongoStore]:
    made = MongoStore(client, database=db_name)
    yield made
    await made.close()


async def is_ferretdb(client: Any) -> bool:
    info = await client.admin.command("buildInfo")
    return "ferretdbVersion" in info


def owned_client(store: MongoStore) -> Any:
    """The client a URL-built store made for itself (None before first use)."""
    return store._client


async def expire(raw: Any, token: str) -> None:
    """Move a record's expiry into the past, as if its TTL ran out unnoticed."""
    past = datetime.now(UTC) - timedelta(seconds=5)
    result = await raw.update_one({"_id": record_key(NS, token)}, {"$set": {"expires": past}})
    assert result.matched_count == 1


async def test_round_trip_through_the_public_api(store: MongoStore, raw: Any) -> None:
    token = await store.save(None, b"first", ttl=TTL, namespace=NS)
    assert token is not None
    assert await store.load(token, namespace=NS) == b"first"

    doc = await raw.find_one({"_id": record_key(NS, token)})
    assert doc is not None
    assert doc["data"] == b"first"
    assert token not in str(doc)  # the store keeps a hash of the id, not the id
    expires = doc["expires"]
    assert timedelta(seconds=TTL - 60) < expires - datetime.now(UTC) <= timedelta(seconds=TTL)

    assert await store.save(token, b"second", ttl=TTL, namespace=NS) == token
    assert await store.load(token, namespace=NS) == b"second"
    assert await store.load(token, namespace="other-cookie") is None

    await store.delete(token, namespace=NS)
    assert await store.load(token, namespace=NS) is None
    await store.delete(token, namespace=NS)  # idempotent


async def test_an_update_never_resurrects_a_deleted_session(store: MongoStore, raw: Any) -> None:
    token = await store.save(None, b"logged in", ttl=TTL, namespace=NS)
    assert token is not None
    await store.delete(token, namespace=NS)

    assert await store.save(token, b"late write", ttl=TTL, namespace=NS) is None
    assert await store.load(token, namespace=NS) is None
    assert await raw.count_documents({}) == 0


async def test_create_refuses_a_live_key_and_keeps_its_data(store: MongoStore, raw: Any) -> None:
    key = record_key(NS, "a" * 43)
    assert await store.create(key, b"original", TTL) is True
    assert await store.create(key, b"intruder", TTL) is False
    assert await store.get(key) == b"original"
    assert await raw.count_documents({}) == 1
    assert await store.update(record_key(NS, "b" * 43), b"nobody", TTL) is False
    assert await raw.count_documents({}) == 1


async def test_an_expired_document_is_not_loaded_and_can_be_replaced(
    store: MongoStore, raw: Any
) -> None:
    token = await store.save(None, b"stale", ttl=TTL, namespace=NS)
    assert token is not None
    await expire(raw, token)
    key = record_key(NS, token)

    # Still stored (the TTL monitor lags, or is missing), but never loaded or extended.
    assert await raw.count_documents({"_id": key}) == 1
    assert await store.load(token, namespace=NS) is None
    assert await store.save(token, b"extended", ttl=TTL, namespace=NS) is None
    # The refused update took its write back by deleting the dead record: not extended.
    assert await raw.find_one({"_id": key}) is None
    assert await store.load(token, namespace=NS) is None

    assert await store.create(key, b"fresh", TTL) is True
    assert await store.load(token, namespace=NS) == b"fresh"
    assert await raw.count_documents({"_id": key}) == 1


async def test_purge_expired_removes_only_expired_documents(store: MongoStore, raw: Any) -> None:
    tokens = []
    for n in range(3):
        token = await store.save(None, b"%d" % n, ttl=TTL, namespace=NS)
        assert token is not None
        tokens.append(token)
    await expire(raw, tokens[0])
    await expire(raw, tokens[1])

    assert await store.purge_expired() == 2
    assert await raw.count_documents({}) == 1
    assert await store.load(tokens[2], namespace=NS) == b"2"
    assert await store.purge_expired() == 0


async def test_index_creation_is_idempotent_and_ttl_support_is_reported(
    client: Any, db_name: str, raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiohttp_sessionkit")
    store = MongoStore(client, database=db_name)
    try:
        await store.open()
        await store.open()
        token = await store.save(None, b"x", ttl=TTL, namespace=NS)
        assert token is not None
        assert await store.load(token, namespace=NS) == b"x"
    finally:
        await store.close()
    # A second store on the same collection: creating the index again is harmless.
    again = MongoStore(raw)
    try:
        await again.open()
        assert await again.load(token, namespace=NS) == b"x"
    finally:
        await again.close()

    indexes = await raw.index_information()
    ttl_indexes = [spec for spec in indexes.values() if "expireAfterSeconds" in spec]
    warnings = [r for r in caplog.records if WARNING_TEXT in r.getMessage()]
    if await is_ferretdb(client):
        # FerretDB v1 answers createIndexes with expireAfterSeconds by NotImplemented (238):
        # no index at all, one warning per store, and loads rely on the expiry filter.
        assert ttl_indexes == []
        assert len(warnings) == 2
        assert all(r.levelno == logging.WARNING for r in warnings)
        assert "238 NotImplemented" in warnings[0].getMessage()
    else:
        assert [spec["key"] for spec in ttl_indexes] == [[("expires", 1)]]
        assert ttl_indexes[0]["expireAfterSeconds"] == 0
        assert warnings == []


async def test_first_use_without_open_ensures_the_index_once(
    client: Any, db_name: str, raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiohttp_sessionkit")
    store = MongoStore(client, database=db_name)
    try:
        results = await asyncio.gather(
            *(store.save(None, b"concurrent", ttl=TTL, namespace=NS) for _ in range(5))
        )
        assert all(results)
        assert await store.purge_expired() == 0
    finally:
        await store.close()

    warnings = [r for r in caplog.records if WARNING_TEXT in r.getMessage()]
    if await is_ferretdb(client):
        assert len(warnings) == 1
    else:
        assert warnings == []
        indexes = await raw.index_information()
        assert any(spec.get("expireAfterSeconds") == 0 for spec in indexes.values())


async def test_a_borrowed_client_is_not_closed(client: Any, db_name: str, raw: Any) -> None:
    store = MongoStore(client, database=db_name, collection="sessions")
    token = await store.save(None, b"borrowed", ttl=TTL, namespace=NS)
    assert token is not None
    await store.close()
    await store.close()  # idempotent
    assert await raw.count_documents({}) == 1  # the client still works
    # And the store itself still works: it never owned the client.
    assert await store.load(token, namespace=NS) == b"borrowed"


async def test_a_borrowed_collection_is_used_as_is(client: Any, db_name: str) -> None:
    own = client[db_name]["custom_sessions"]
    store = MongoStore(own, database="ignored", collection="ignored")
    try:
        token = await store.save(None, b"in my collection", ttl=TTL, namespace=NS)
        assert token is not None
        assert (await own.find_one({"_id": record_key(NS, token)}))["data"] == b"in my collection"
        assert "ignored" not in await client.list_database_names()
    finally:
        await store.close()
    assert await own.count_documents({}) == 1


async def test_an_unacknowledged_collection_still_gets_create_only_writes(
    client: Any, db_name: str, raw: Any
) -> None:
    fire_and_forget = raw.with_options(write_concern=WriteConcern(w=0))
    store = MongoStore(fire_and_forget)
    key = record_key(NS, "c" * 43)
    assert await store.create(key, b"first", TTL) is True
    assert await store.create(key, b"second", TTL) is False
    assert await store.update(key, b"third", TTL) is True
    assert await store.get(key) == b"third"
    await store.close()


async def test_a_url_store_owns_and_closes_its_client(
    client: Any,
    db_name: str,
    raw: Any,
    mongo_server: Any,  # noqa: F811
) -> None:
    # The URL always builds PyMongo's AsyncMongoClient; `raw` checks through either driver.
    store = MongoStore(mongo_server.url, database=db_name)
    assert owned_client(store) is None  # the constructor did no I/O and made no client
    token = await store.save(None, b"from url", ttl=TTL, namespace=NS)
    assert token is not None
    assert (await raw.find_one({"_id": record_key(NS, token)}))["data"] == b"from url"
    owned = owned_client(store)
    assert isinstance(owned, AsyncMongoClient)

    await store.close()
    with pytest.raises(InvalidOperation):
        await owned[db_name]["sessions"].find_one({})
    await store.close()  # idempotent

    # Used again after close (an app restarted in the same process): a new client.
    try:
        assert await store.load(token, namespace=NS) == b"from url"
    finally:
        await store.close()


class _Filters(CommandListener):
    """(command name, filter) of every find, update, findAndModify and delete a client sends."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: CommandStartedEvent) -> None:
        command = event.command
        name = event.command_name
        if name == "find":
            self.seen.append((name, dict(command["filter"])))
        elif name == "findAndModify":
            self.seen.append((name, dict(command["query"])))
        elif name == "update":
            self.seen.extend((name, dict(each["q"])) for each in command["updates"])
        elif name == "delete":
            self.seen.extend((name, dict(each["q"])) for each in command["deletes"])

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


def _monitored_client(driver: str, url: str, listener: CommandListener) -> Any:
    """A client of ``driver`` that reports its commands to ``listener``."""
    options: dict[str, Any] = {"tz_aware": True, "event_listeners": [listener]}
    if driver == "pymongo":
        return AsyncMongoClient(url, **options)
    import motor.motor_asyncio as motor_asyncio

    return motor_asyncio.AsyncIOMotorClient(url, **options)


async def test_concurrent_loads_each_get_their_own_answer_by_id_lookups(
    driver: str,
    mongo_server: Any,  # noqa: F811
    db_name: str,
    raw: Any,
) -> None:
    # Reads are deliberately not batched into one {"_id": {"$in": [...]}} query: FerretDB
    # scans the whole collection for $in (and for compound filters), so every load must
    # stay a lookup by _id alone, with expiry checked by the store.
    seen = _Filters()
    monitored = _monitored_client(driver, mongo_server.url, seen)
    store = MongoStore(monitored, database=db_name)
    try:
        tokens = []
        for n in range(8):
            token = await store.save(None, b"payload-%d" % n, ttl=TTL, namespace=NS)
            assert token is not None
            tokens.append(token)
        stale = tokens.pop()
        await expire(raw, stale)
        unknown = "u" * 42 + "g"  # id-shaped (canonical last character), never issued
        asked = [*tokens, unknown, stale, tokens[2]]  # unknown, expired, loaded twice
        seen.seen.clear()

        results = await asyncio.gather(*(store.load(token, namespace=NS) for token in asked))
        finds = [f for name, f in seen.seen if name == "find"]

        assert results == [*(b"payload-%d" % n for n in range(7)), None, None, b"payload-2"]
        assert sorted(f["_id"] for f in finds) == sorted(record_key(NS, token) for token in asked)
        assert all(list(f) == ["_id"] and isinstance(f["_id"], str) for f in finds)
    finally:
        await store.close()
        await close_client(monitored)


async def test_update_filters_on_id_alone_and_keeps_the_update_only_contract(
    driver: str,
    mongo_server: Any,  # noqa: F811
    db_name: str,
    raw: Any,
) -> None:
    # FerretDB 1.24 scans the whole collection for any filter other than a bare {"_id": key},
    # so the update must never send {"_id": key, "expires": ...}; it checks expiry itself.
    seen = _Filters()
    monitored = _monitored_client(driver, mongo_server.url, seen)
    store = MongoStore(monitored, database=db_name)
    never_issued = "n" * 42 + "w"  # id-shaped (canonical last character), never issued
    try:
        live = await store.save(None, b"live", ttl=TTL, namespace=NS)
        stale = await store.save(None, b"stale", ttl=TTL, namespace=NS)
        gone = await store.save(None, b"gone", ttl=TTL, namespace=NS)
        assert live is not None and stale is not None and gone is not None
        await expire(raw, stale)
        await store.delete(gone, namespace=NS)
        before_update = datetime.now(UTC)
        seen.seen.clear()

        assert await store.save(live, b"live 2", ttl=TTL, namespace=NS) == live
        assert await store.save(stale, b"stale 2", ttl=TTL, namespace=NS) is None
        assert await store.save(gone, b"gone 2", ttl=TTL, namespace=NS) is None
        assert await store.save(never_issued, b"never", ttl=TTL, namespace=NS) is None

        sent = list(seen.seen)
        assert sent, "the updates sent no command the listener recognises"
        assert all(list(f) == ["_id"] and isinstance(f["_id"], str) for _, f in sent), sent
        assert {f["_id"] for _, f in sent} == {
            record_key(NS, token) for token in (live, stale, gone, never_issued)
        }
    finally:
        await store.close()
        await close_client(monitored)

    # And the writes are right: the live record is extended, nothing else exists.
    docs = {doc["_id"]: doc async for doc in raw.find({})}
    assert list(docs) == [record_key(NS, live)]
    assert docs[record_key(NS, live)]["data"] == b"live 2"
    assert docs[record_key(NS, live)]["expires"] > before_update + timedelta(seconds=TTL - 60)


@pytest.mark.parametrize("target", ["redis://localhost/", "localhost:27017", 42, object()])
def test_unusable_targets_fail_at_construction(target: Any) -> None:
    with pytest.raises(ConfigurationError):
        MongoStore(target)


async def test_malformed_tokens_never_reach_the_server(
    store: MongoStore, client: Any, db_name: str
) -> None:
    for token in ["*", "", "x" * 42, "x" * 44, "../" * 15, "$where", "a" * 42 + "="]:
        assert await store.load(token, namespace=NS) is None
        assert await store.save(token, b"data", ttl=TTL, namespace=NS) is None
        await store.delete(token, namespace=NS)
    # Not a document, not even the database or its index: the store never talked to MongoDB.
    assert db_name not in await client.list_database_names()


@pytest.mark.slow
async def test_a_down_server_raises_store_unavailable_and_recovery_needs_no_new_store(
    store: MongoStore,
    mongo_server: Any,  # noqa: F811
    db_name: str,
) -> None:
    url_store = MongoStore(mongo_server.url, database=db_name)
    try:
        await check_outage_and_recovery(store, url_store, mongo_server)
    finally:
        await url_store.close()


async def check_outage_and_recovery(store: MongoStore, url_store: MongoStore, server: Any) -> None:
    token = await store.save(None, b"before", ttl=TTL, namespace=NS)
    assert token is not None
    assert await url_store.load(token, namespace=NS) == b"before"
    try:
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.load(token, namespace=NS)
        with pytest.raises(StoreUnavailable):
            await store.save(None, b"during", ttl=TTL, namespace=NS)
        with pytest.raises(StoreUnavailable):
            await store.purge_expired()
        assert time.monotonic() - started < 10  # the test client waits 2 s per call
        # A URL-built store fails fast by default too (5 s server selection, not 30 s).
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await url_store.load(token, namespace=NS)
        assert time.monotonic() - started < 8
    finally:
        server.start()
    # The same store objects work again once the server is back.
    for each in (store, url_store):
        fresh = await each.save(None, b"after", ttl=TTL, namespace=NS)
        assert fresh is not None
        assert await each.load(fresh, namespace=NS) == b"after"


CORRUPT_DATA: dict[str, dict[str, Any]] = {
    "data-missing": {},
    "data-a-string": {"data": "not bytes"},
    "data-null": {"data": None},
    "data-a-huge-int": {"data": 10**15},  # bytes(int) would try to allocate that much
    "data-an-int": {"data": 42},
    "data-a-list-of-ints": {"data": [1, 0, 0, 0, 0]},
    "data-a-document": {"data": {"user": "admin"}},
    "data-a-bool": {"data": True},
    "data-a-date": {"data": datetime(2030, 1, 1, tzinfo=UTC)},
}


@pytest.mark.parametrize("fields", CORRUPT_DATA.values(), ids=CORRUPT_DATA.keys())
async def test_a_document_without_a_binary_payload_opens_a_fresh_session(
    store: MongoStore, raw: Any, aiohttp_client: Any, fields: dict[str, Any]
) -> None:
    from aiohttp import DummyCookieJar, web

    from aiohttp_sessionkit import get_session, setup
    from aiohttp_sessionkit.ids import new_session_id

    token = new_session_id()
    expires = datetime.now(UTC) + timedelta(hours=1)
    await raw.insert_one({"_id": record_key(NS, token), "expires": expires, **fields})
    assert await store.load(token, namespace=NS) is None

    async def handler(request: web.Request) -> web.Response:
        session = await get_session(request)
        seen = dict(session)
        if request.method == "POST":
            session["user"] = "alice"
        return web.json_response({"seen": seen, "new": session.new})

    app = web.Application()
    setup(app, store, cookie_name=NS)
    app.router.add_route("*", "/", handler)
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    cookie = {"Cookie": f"{NS}={token}"}
    response = await client.get("/", headers=cookie)
    assert response.status == 200
    assert await response.json() == {"seen": {}, "new": True}
    response = await client.post("/", headers=cookie)
    assert response.status == 200
    issued = response.cookies[NS].value
    assert issued and issued != token  # a new session under a new id, never the planted one
    assert await store.load(issued, namespace=NS) is not None


# -- compare-and-swap: one filtered update on MongoDB, a lock document on FerretDB ----------


class _Commands(CommandListener):
    """(command name, _id of each document or filter) of every insert, find, update and
    delete a client sends."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[Any]]] = []

    def started(self, event: CommandStartedEvent) -> None:
        command, name = event.command, event.command_name
        if name == "insert":
            self.seen.append((name, [doc["_id"] for doc in command["documents"]]))
        elif name == "find":
            self.seen.append((name, [dict(command["filter"])]))
        elif name == "update":
            self.seen.append((name, [dict(each["q"]) for each in command["updates"]]))
        elif name == "delete":
            self.seen.append((name, [dict(each["q"]) for each in command["deletes"]]))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


def lock_id(key: str) -> str:
    return "lock:" + key


async def locks(raw: Any) -> list[str]:
    return sorted([doc["_id"] async for doc in raw.find({}) if doc["_id"].startswith("lock:")])


async def test_a_swap_is_one_filtered_update_on_mongodb_and_four_lookups_by_id_on_ferretdb(
    driver: str,
    client: Any,
    mongo_server: Any,  # noqa: F811
    db_name: str,
    raw: Any,
) -> None:
    seen = _Commands()
    monitored = _monitored_client(driver, mongo_server.url, seen)
    store = MongoStore(monitored, database=db_name)
    try:
        token = await store.save(None, b"v1", ttl=TTL, namespace=NS)
        assert token is not None
        key = record_key(NS, token)
        seen.seen.clear()
        assert await store.replace(key, b"v1", b"v2", TTL) is True
        sent = list(seen.seen)
    finally:
        await store.close()
        await close_client(monitored)
    if await is_ferretdb(client):
        # Take the lock (a unique _id), read, compare here, write, let go: every filter a
        # bare _id, which FerretDB answers from its primary key (a compound one is a scan).
        assert sent == [
            ("insert", [lock_id(key)]),
            ("find", [{"_id": key}]),
            ("update", [{"_id": key}]),
            ("delete", [{"_id": lock_id(key)}]),
        ]
    else:
        assert [name for name, _ in sent] == ["update"]
        assert sent[0][1][0]["data"] == b"v1"  # the comparison is in the atomic update
    assert await raw.find_one({"_id": key}, {"_id": 0, "data": 1}) == {"data": b"v2"}
    assert await locks(raw) == []


LEFT_BEHIND = {
    # A process killed between taking the lock and letting go of it, a moment ago.
    "lock-within-its-lease": [("lock", 1.0)],
    "lock-past-its-lease": [("lock", -1.0)],
    # ...and then another one killed while breaking that lock (its guard is left too).
    "lock-and-its-breakers-guard": [("lock", -10.0), ("guard", -1.0)],
}


@pytest.mark.parametrize("left", LEFT_BEHIND.values(), ids=LEFT_BEHIND.keys())
async def test_a_lock_left_by_a_killed_process_holds_swaps_off_only_until_its_lease_ends(
    store: MongoStore, client: Any, raw: Any, left: list[tuple[str, float]]
) -> None:
    token = await store.save(None, b"v1", ttl=TTL, namespace=NS)
    assert token is not None
    key = record_key(NS, token)
    now = datetime.now(UTC)
    for kind, seconds in left:
        # The guard of a breaker is named after the lock's owner and has one of its own.
        _id = lock_id(key) if kind == "lock" else f"{lock_id(key)}:{'d' * 32}"
        owner = "d" * 32 if kind == "lock" else "e" * 32
        expires = now + timedelta(seconds=seconds)
        await raw.insert_one({"_id": _id, "owner": owner, "expires": expires})
    ferretdb = await is_ferretdb(client)
    lease = max(seconds for _, seconds in left)

    started = time.monotonic()
    # A swap from a payload the record no longer holds fails at once, lock or not...
    assert await store.replace(key, b"v0", b"stale", TTL) is False
    assert time.monotonic() - started < 0.5
    # ...and one from the right payload waits out the dead lock's lease, then breaks it.
    assert await store.replace(key, b"v1", b"v2", TTL) is True
    waited = time.monotonic() - started
    assert await store.load(token, namespace=NS) == b"v2"
    if ferretdb:
        assert waited >= lease - 0.1
        assert await locks(raw) == []  # broken, guard and all, and the new one let go
    else:  # MongoDB's filtered update is atomic: it never looks at locks
        assert waited < 0.5


async def test_lock_documents_are_never_sessions_and_purge_clears_the_dead_ones_uncounted(
    store: MongoStore, client: Any, raw: Any
) -> None:
    held, dead = await store.save(None, b"held", ttl=TTL, namespace=NS), None
    dead = await store.save(None, b"dead", ttl=TTL, namespace=NS)
    assert held is not None and dead is not None
    await expire(raw, dead)
    now = datetime.now(UTC)
    held_key, dead_key = record_key(NS, held), record_key(NS, dead)
    left = {
        lock_id(held_key): now + timedelta(seconds=30),  # a swap in progress
        lock_id(dead_key): now - timedelta(seconds=10),  # its process was killed
        f"{lock_id(dead_key)}:{0xE:032x}": now - timedelta(seconds=1),  # and its breaker
    }
    for n, (_id, expires) in enumerate(left.items()):
        await raw.insert_one({"_id": _id, "owner": f"{n + 0xD:032x}", "expires": expires})
    for _id in left:  # no payload under a lock's _id, whatever asks for it
        assert await store.get(_id) is None
        assert await store.load_handle(_id, namespace=NS) is None

    purged = await store.purge_expired()

    if await is_ferretdb(client):
        assert purged == 1  # the expired session, not the locks
        assert await locks(raw) == [lock_id(held_key)]  # the live lock stays
    else:  # no locks on MongoDB: its TTL monitor takes expired documents of any kind
        assert purged == 3
    assert await store.load(held, namespace=NS) == b"held"
    assert await raw.find_one({"_id": dead_key}) is None
