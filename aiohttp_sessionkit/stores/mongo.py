"""MongoDB store: one document per session, through PyMongo's async API or Motor.

Documents look like ``{_id: key, data: <binary>, expires: <UTC datetime>}``. A TTL index on
``expires`` lets the server delete abandoned sessions, but MongoDB's TTL monitor runs only
about once a minute and some compatible servers (FerretDB) have no TTL indexes at all, so
every query also filters on ``expires`` and :meth:`MongoStore.purge_expired` can clean up.
On FerretDB 1.x, whose filtered updates are not atomic, compare-and-swap also writes
short-lived lock documents ``{_id: "lock:<key>", owner, expires}`` (see
:meth:`MongoStore._replace_locked`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

from ..abc import ServerStore
from ..exceptions import ConfigurationError, StoreError, StoreUnavailable
from ._startup import open_or_defer

try:
    import pymongo
    from pymongo import AsyncMongoClient
    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.collection import Collection
    from pymongo.errors import (
        ConnectionFailure,
        DuplicateKeyError,
        ExecutionTimeout,
        OperationFailure,
        PyMongoError,
    )
    from pymongo.write_concern import WriteConcern
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'MongoStore needs PyMongo 4.10 or later: pip install "aiohttp-sessionkit[mongo]" '
        '(or "aiohttp-sessionkit[motor]" to use Motor)'
    ) from exc

__all__ = ["MongoStore"]

logger = logging.getLogger("aiohttp_sessionkit")

# A PyMongo AsyncCollection or a Motor AsyncIOMotorCollection. Motor ships no type
# information, and both expose the same awaitable methods, so the handle is untyped.
_Collection: TypeAlias = Any

_URL_SCHEMES = ("mongodb://", "mongodb+srv://")
# Short enough that a down server turns into StoreUnavailable (a 503) quickly instead of
# holding the request for PyMongo's 30-second default.
_URL_CLIENT_DEFAULTS = {"serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 5000}
_AUTHENTICATION_FAILED = 18

# Swap locks, used only where a filtered update is not atomic (FerretDB 1.x). A lock is a
# document {_id: "lock:<record key>", owner, expires}: the server's unique _id lets one
# inserter in. A record key is 64 hex characters, so no lock is ever looked up as a record,
# and a lock has no "data" field, so no read could return one as a payload either.
_LOCK_PREFIX = "lock:"
#: Seconds a lock protects its swap (two round trips); one left by a process killed mid-swap
#: is broken once this has passed.
_LOCK_LEASE = 5.0
#: Seconds a swap waits for another one's lock before it reports a lost race (False, so
#: ServerStore._merge reads again): longer than a lease, so a dead holder's lock gets broken.
_LOCK_WAIT = _LOCK_LEASE + 1.0
#: How many guards deep a broken lock is chased (a guard is itself a lock, see _break).
_GUARD_DEPTH = 3


class MongoStore(ServerStore):
    """Sessions in a MongoDB collection (also FerretDB and other wire-compatible servers)."""

    def __init__(
        self,
        url_or_client_or_collection: str | AsyncMongoClient[Any] | AsyncCollection[Any] | Any,
        *,
        database: str = "aiohttp_sessions",
        collection: str = "sessions",
    ) -> None:
        """Accept a ``mongodb://`` / ``mongodb+srv://`` URL, a client, or a collection.

        A URL makes the store create (lazily) and own a ``pymongo.AsyncMongoClient``, closed
        by :meth:`close`. A client or collection, of PyMongo's async API or Motor, is borrowed
        and never closed. ``database`` and ``collection`` are ignored for a collection.
        """
        if not isinstance(database, str) or not database:
            raise ConfigurationError("MongoStore(database=...) must be a non-empty string")
        if not isinstance(collection, str) or not collection:
            raise ConfigurationError("MongoStore(collection=...) must be a non-empty string")
        self._database_name = database
        self._collection_name = collection
        self._url: str | None = None
        self._client: Any = None  # AsyncMongoClient or a Motor client
        self._collection: _Collection = None
        self._owns_client = False
        self._index_ready = False
        self._index_lock = asyncio.Lock()
        # Whether a filtered update tests and writes a document in one atomic step: MongoDB
        # does (document-level atomicity); FerretDB 1.x does not (it finds, then writes by
        # _id: of 20 concurrent swaps from one payload, several won), so replace() takes a
        # lock document there. Learnt on first use.
        self._atomic_updates = True

        target = url_or_client_or_collection
        if isinstance(target, str):
            if not target.lower().startswith(_URL_SCHEMES):
                raise ConfigurationError(
                    "MongoStore needs a URL starting with mongodb:// or mongodb+srv://, "
                    "an async client or a collection"
                )
            self._url = target
            self._owns_client = True
        elif isinstance(target, AsyncCollection):
            self._collection = _acknowledged(target)
        elif isinstance(target, AsyncMongoClient):
            self._client = target
        elif isinstance(target, (pymongo.MongoClient, Collection)):
            raise ConfigurationError(
                "MongoStore needs an async client: use pymongo.AsyncMongoClient (or Motor's "
                "AsyncIOMotorClient) instead of the blocking pymongo.MongoClient"
            )
        elif _is_motor(target, "insert_one"):
            self._collection = _acknowledged(target)
        elif _is_motor(target, "list_database_names"):
            self._client = target
        else:
            raise ConfigurationError(
                "MongoStore accepts a mongodb:// URL, a pymongo.AsyncMongoClient or Motor "
                f"client, or a collection of either; got {type(target).__name__}"
            )

    def __repr__(self) -> str:
        # Never the URL: it may carry a password.
        if self._collection is not None:
            where = self._collection.full_name
        else:
            where = f"{self._database_name}.{self._collection_name}"
        return f"<MongoStore {where}>"

    async def open(self) -> None:
        """Create the TTL index on ``expires`` (idempotent; also done on first use).

        A server that cannot be reached does not fail startup: it is logged once and the
        index is created on first use, once the server is back (requests that need a
        session get 503 meanwhile).
        """
        await open_or_defer(self, self._ready)

    async def close(self) -> None:
        """Close the client if this store created it from a URL; borrowed ones stay open."""
        if not self._owns_client:
            return
        client, self._client, self._collection = self._client, None, None
        if client is not None:
            # A URL-built client is always PyMongo's, whose close() is a coroutine (Motor's
            # is not, but Motor clients are only ever borrowed).
            await client.close()

    async def purge_expired(self) -> int:
        collection = await self._ready()
        now = _now()
        with _translate_errors():
            if self._atomic_updates:  # no swap locks on MongoDB
                result = await collection.delete_many({"expires": {"$lte": now}})
                return int(result.deleted_count)
            # Records only (they have "data"); locks are not sessions, not counted, and go
            # through _break: a plain filtered delete could remove a lock just retaken.
            result = await collection.delete_many(
                {"expires": {"$lte": now}, "data": {"$exists": True}}
            )
            stale = collection.find(
                {"expires": {"$lte": now}, "data": {"$exists": False}}, {"owner": 1}
            )
            async for lock in stale:
                lock_id = lock.get("_id")
                if isinstance(lock_id, str) and lock_id.startswith(_LOCK_PREFIX):
                    key = lock_id[len(_LOCK_PREFIX) :].partition(":")[0]
                    await self._break(collection, key, lock_id, lock.get("owner"), 0)
        return int(result.deleted_count)

    async def get(self, key: str) -> bytes | None:
        collection = await self._ready()
        with _translate_errors():
            # Looked up by _id alone and checked for expiry here: MongoDB serves both forms
            # from the _id index, but some compatible servers (FerretDB) scan the collection
            # for a compound filter, several times slower. For the same reason concurrent
            # reads are not batched into one {"_id": {"$in": [...]}} query as RedisStore
            # batches its GETs: FerretDB 1.24 scans the collection for $in (and $or) too,
            # so one $in query costs about as much as 10 lookups by _id on 1,000 documents
            # and 30 on 10,000; only the client's CPU would shrink.
            doc = await _record(collection, key)
        if doc is None or not _is_live(doc.get("expires"), _now()):
            return None
        data = doc.get("data")
        # A document edited by hand or by another program may hold anything there: only
        # BSON binary (bytes, or bson.Binary, a bytes subclass) is a payload of ours.
        # bytes() of a str raises, and of an int allocates that many zero bytes.
        return bytes(data) if isinstance(data, bytes) else None

    async def create(self, key: str, data: bytes, ttl: int) -> bool:
        collection = await self._ready()
        now = _now()
        document = {"_id": key, "data": data, "expires": now + timedelta(seconds=ttl)}
        with _translate_errors():
            try:
                await collection.insert_one(dict(document))
                return True
            except DuplicateKeyError:
                pass
            # The TTL monitor may not have removed an expired record yet (or never will, on a
            # server without TTL indexes): replace it, but never a live one. On FerretDB the
            # filtered delete finds, then deletes by _id: two creates racing here could each
            # delete (the second one the first one's new record) and both report success, so
            # they take the record's swap lock (a user index's key is reused; a session's
            # never is, so only a user's index gets here in practice).
            async with contextlib.AsyncExitStack() as stack:
                if not self._atomic_updates:
                    if not await stack.enter_async_context(self._locked(collection, key)):
                        return False
                removed = await collection.delete_one({"_id": key, "expires": {"$lte": now}})
                if removed.deleted_count != 1:
                    return False
                try:
                    await collection.insert_one(dict(document))
                except DuplicateKeyError:  # a concurrent create won the race
                    return False
                return True

    async def update(self, key: str, data: bytes, ttl: int) -> bool:
        collection = await self._ready()
        now = _now()
        with _translate_errors():
            # One findAndModify by _id alone, which returns the document as it was, instead
            # of update_one({"_id": key, "expires": {"$gt": now}}): FerretDB 1.24 (SQLite)
            # pushes only a bare _id filter down and scans the collection in Go for the
            # compound one: several times slower, growing with the collection (figures in
            # docs/performance.md, "Figures behind choices"). A find_one then update_one by
            # _id costs a second round trip, which on MongoDB (where both filters use the _id
            # index) would cost more than the scan saves.
            # No projection: FerretDB 1.24 rejects findAndModify's "fields".
            before = await collection.find_one_and_update(
                {"_id": key},
                {"$set": {"data": data, "expires": now + timedelta(seconds=ttl)}},
            )
            if before is None:  # absent or deleted: nothing written, never upserted
                return False
            if _is_live(before.get("expires"), now):
                return True
            # The record had expired but was still stored (the TTL monitor lags, or is
            # missing): it is dead, so take back the write by deleting it, as the monitor
            # or purge_expired() would. Until this delete lands (one round trip, and only
            # for a record already past its expiry) a concurrent load or update of the
            # same session may see it live; the delete then removes that write too.
            await collection.delete_one({"_id": key})
        return False

    async def replace(self, key: str, expected: bytes, data: bytes, ttl: int) -> bool:
        collection = await self._ready()
        if not self._atomic_updates:
            return await self._replace_locked(collection, key, expected, data, ttl)
        now = _now()
        with _translate_errors():
            # One update_one whose filter holds the comparison: MongoDB matches and writes
            # the document as one atomic step, so of two swaps from the same payload the
            # second no longer matches. matched, not modified: a swap that writes the same
            # bytes counts as written.
            result = await collection.update_one(
                {"_id": key, "data": expected, "expires": {"$gt": now}},
                {"$set": {"data": data, "expires": now + timedelta(seconds=ttl)}},
            )
        return int(result.matched_count) == 1

    async def _replace_locked(
        self, collection: _Collection, key: str, expected: bytes, data: bytes, ttl: int
    ) -> bool:
        """replace() on a server whose filtered update finds, then writes (FerretDB 1.x):
        under the record's lock, read by _id, compare here, write by _id. Every operation
        is by bare _id, which FerretDB serves from its primary key instead of a scan."""
        with _translate_errors():
            async with self._locked(collection, key, expected) as locked:
                if not locked:
                    return False  # changed, or held by others all along: the caller reads again
                doc = await _record(collection, key)
                if not _holds(doc, expected):
                    return False
                result = await collection.update_one(
                    {"_id": key},
                    {"$set": {"data": data, "expires": _now() + timedelta(seconds=ttl)}},
                )
                return int(result.matched_count) == 1

    @contextlib.asynccontextmanager
    async def _locked(
        self, collection: _Collection, key: str, expected: bytes | None = None
    ) -> AsyncIterator[bool]:
        """Hold ``key``'s swap lock for the block (True), or not at all (False: see _lock)."""
        if not await self._lock(collection, key, expected):
            yield False
            return
        try:
            yield True
        finally:
            # By _id alone (a compound filter would be a scan on FerretDB): the lock is this
            # block's unless its lease ran out, which a few round trips never take.
            await collection.delete_one({"_id": _LOCK_PREFIX + key})

    async def _lock(self, collection: _Collection, key: str, expected: bytes | None) -> bool:
        """Take ``key``'s swap lock, waiting while another swap holds it; False after
        _LOCK_WAIT seconds of others holding it, or as soon as the record no longer holds
        ``expected`` (when given): that swap would fail anyway. A lock past its lease is
        broken. Waiting only reads (a failed insert is a write, which SQLite serializes)."""
        lock_id = _LOCK_PREFIX + key
        deadline = time.monotonic() + _LOCK_WAIT
        pause = 0.001
        while True:
            try:
                await collection.insert_one(_lock_document(lock_id))
                return True
            except DuplicateKeyError:
                pass
            while True:
                if expected is not None and not _holds(await _record(collection, key), expected):
                    return False
                if time.monotonic() >= deadline:
                    return False  # also ends a lock that cannot be broken (edited by hand)
                held = await collection.find_one({"_id": lock_id}, {"owner": 1, "expires": 1})
                if held is None:
                    break  # released: try to take it
                if not _is_live(held.get("expires"), _now()):
                    await self._break(collection, key, lock_id, held.get("owner"), 0)
                    await asyncio.sleep(random.uniform(0, pause))  # if another breaker is at it
                    break
                await asyncio.sleep(random.uniform(0, pause))
                pause = min(pause * 2, 0.02)

    async def _break(
        self, collection: _Collection, key: str, doc_id: str, owner: object, depth: int
    ) -> None:
        """Remove the lock (or guard) ``doc_id`` of ``owner``, found past its lease.

        A delete filtered on the owner is not atomic on FerretDB either: a breaker that saw
        the dead lock could, a moment later, delete the next holder's fresh one. So breaking
        is itself guarded: a guard document named after the dead owner (owners are random,
        never reused) admits one breaker per dead lock, and that breaker's delete can only
        meet the dead lock (nobody else may delete it, and its owner is gone). A guard left
        by a breaker killed in between expires and is broken the same way."""
        if not isinstance(owner, str) or depth >= _GUARD_DEPTH:
            return
        guard_id = f"{_LOCK_PREFIX}{key}:{owner}"
        for retry in (False, True):
            try:
                await collection.insert_one(_lock_document(guard_id))
                break
            except DuplicateKeyError:
                guard = await collection.find_one({"_id": guard_id}, {"owner": 1, "expires": 1})
                if retry or guard is None or _is_live(guard.get("expires"), _now()):
                    return  # another breaker is at it (or was): the caller looks again
                # A breaker killed mid-break left its guard: break that, then this lock.
                await self._break(collection, key, guard_id, guard.get("owner"), depth + 1)
        try:
            await collection.delete_one({"_id": doc_id, "owner": owner})
        finally:
            # Once the dead lock is gone no later breaker can match its owner, so the
            # guard may go at once.
            await collection.delete_one({"_id": guard_id})

    async def remove(self, key: str) -> None:
        collection = await self._ready()
        with _translate_errors():
            await collection.delete_one({"_id": key})

    async def _ready(self) -> _Collection:
        """The collection, with the client created and the index ensured on first use."""
        collection = self._collection
        if collection is None:
            collection = self._collection = self._make_collection()
        if not self._index_ready:
            async with self._index_lock:
                if not self._index_ready:
                    await self._create_index(collection)
        return collection

    def _make_collection(self) -> _Collection:
        if self._client is None:
            assert self._url is not None
            options: dict[str, Any] = {
                name: value
                for name, value in _URL_CLIENT_DEFAULTS.items()
                if f"{name.lower()}=" not in self._url.lower()  # the URL's own setting wins
            }
            self._client = AsyncMongoClient(self._url, tz_aware=True, **options)
        return _acknowledged(self._client[self._database_name][self._collection_name])

    async def _create_index(self, collection: _Collection) -> None:
        with _translate_errors():
            try:
                info = await collection.database.command("buildInfo")
            except OperationFailure:
                info = {}  # refused (an unusual permission setup): MongoDB
            self._atomic_updates = "ferretdbVersion" not in info
            try:
                await collection.create_index("expires", expireAfterSeconds=0)
            except OperationFailure as exc:
                if exc.code == _AUTHENTICATION_FAILED or isinstance(exc, ExecutionTimeout):
                    raise  # unavailable: not marked ready, so the next call retries
                # FerretDB answers NotImplemented (238); MongoDB may report a conflicting
                # index on ``expires``. Loads filter on expiry anyway, so carry on.
                details = exc.details or {}
                logger.warning(
                    "MongoStore could not create a TTL index on %s.expires (%s %s: %s); "
                    "expired sessions are never loaded but stay stored until "
                    "purge_expired() is called",
                    collection.full_name,
                    exc.code,
                    details.get("codeName", ""),
                    details.get("errmsg", exc),
                )
        self._index_ready = True


def _now() -> datetime:
    return datetime.now(UTC)


def _is_live(expires: object, now: datetime) -> bool:
    if not isinstance(expires, datetime):
        return False
    if expires.tzinfo is None:  # a borrowed client without tz_aware: BSON dates are UTC
        expires = expires.replace(tzinfo=UTC)
    return expires > now


async def _record(collection: _Collection, key: str) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = await collection.find_one(
        {"_id": key}, {"_id": 0, "data": 1, "expires": 1}
    )
    return doc


def _holds(doc: dict[str, Any] | None, expected: bytes) -> bool:
    """True when ``doc`` (a record as _record reads it) is live and holds ``expected``."""
    if doc is None or not _is_live(doc.get("expires"), _now()):
        return False
    data = doc.get("data")
    return isinstance(data, bytes) and bytes(data) == expected


def _lock_document(lock_id: str) -> dict[str, Any]:
    return {
        "_id": lock_id,
        "owner": secrets.token_hex(16),
        "expires": _now() + timedelta(seconds=_LOCK_LEASE),
    }


def _acknowledged(collection: _Collection) -> _Collection:
    # Create-only and update-only writes must learn whether they matched: never w=0.
    if collection.write_concern.acknowledged:
        return collection
    return collection.with_options(write_concern=WriteConcern(w=1))


def _is_motor(obj: object, class_attribute: str) -> bool:
    # Motor is recognised without importing it. The attribute is looked up on the class:
    # Motor clients and databases answer any instance attribute with a sub-database or
    # sub-collection.
    cls = type(obj)
    return cls.__module__.partition(".")[0] == "motor" and hasattr(cls, class_attribute)


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    """Map driver errors to the store contract; DuplicateKeyError passes through."""
    try:
        yield
    except DuplicateKeyError:
        raise
    except (ConnectionFailure, ExecutionTimeout, OSError) as exc:
        raise StoreUnavailable(f"MongoDB is unavailable: {type(exc).__name__}: {exc}") from exc
    except OperationFailure as exc:
        if exc.code == _AUTHENTICATION_FAILED:
            raise StoreUnavailable("MongoDB rejected the credentials") from exc
        raise StoreError(f"MongoDB operation failed: {exc}") from exc
    except PyMongoError as exc:
        raise StoreError(f"MongoDB operation failed: {exc}") from exc
