"""What the database stores share, whatever their driver: :class:`DatabaseStore`.

PostgresStore (asyncpg) and SQLAlchemyStore differ in their statements and in their
driver's errors; the plumbing around those is the same and lives here, once:

- batching: concurrent reads, creates, updates and compare-and-swaps share statements through
  :class:`~aiohttp_sessionkit.batching.Batcher`, and a shared statement that fails on a
  query error is run again item by item (:func:`~aiohttp_sessionkit.batching.each_on_failure`);
- preparation: the pool or engine and the table are set up once, under a lock, on
  :meth:`open` or first use;
- server-side limits: statements are abandoned by the server just before the session
  layer's ``store_timeout``, so a write answered 503 is rolled back there;
- settling: a statement cut short is cancelled on the server before its connection is
  given back or dropped, in the background, and :meth:`close` waits for those;
- identifier and ``purge_expired`` argument checks, and the translation of driver errors
  into :class:`~aiohttp_sessionkit.StoreUnavailable` (a 503) or
  :class:`~aiohttp_sessionkit.StoreError`.

A driver module supplies its statements (the ``_*_one`` and ``_*_many`` methods), how it
connects (:meth:`DatabaseStore._connect`) and how to read its driver's errors.
"""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

from ..abc import ServerStore
from ..batching import Batcher, each_on_failure
from ..exceptions import ConfigurationError, StoreError, StoreUnavailable

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: PostgreSQL's NAMEDATALEN - 1 (it silently truncates longer names), the shortest limit
#: of the supported databases; MySQL allows 64. Identifiers are ASCII: bytes = characters.
MAX_IDENTIFIER = 63
#: The server gives up on a statement after this share of the session layer's
#: store_timeout: before the request's 503, so a write answered 503 is rolled back.
SERVER_SHARE = 0.9
#: Seconds a connection whose statement was cut short may take, beyond the server's own
#: limit, to confirm the cancel before it is dropped (a hung server never confirms).
SETTLE_GRACE = 1.0
#: Without a server-side limit (a borrowed pool or engine, or store_timeout=None): the
#: whole wait.
SETTLE_DEFAULT = 5.0
#: The operations that may share statements.
ALL_OPERATIONS = frozenset({"get", "create", "update", "replace"})

#: A create or an update: the record key, the payload, the TTL in seconds.
Write = tuple[str, bytes, int]
#: A compare-and-swap (:meth:`ServerStore.replace`): the record key, the payload the record
#: must hold, the payload to write, the TTL in seconds.
Swap = tuple[str, bytes, bytes, int]
#: What a ready store runs its statements on: an asyncpg pool, a SQLAlchemy engine.
_Handle = TypeVar("_Handle")


def identifier(value: object, what: str, *, store: str, too_long: str) -> str:
    """``value`` if it is a plain SQL identifier, short enough for every database.

    ``store`` names the store in the message; ``too_long`` ends the message for a name
    over :data:`MAX_IDENTIFIER` ("is longer than ...").
    """
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ConfigurationError(
            f"{store} {what} must be a plain identifier (letters, digits and '_', not "
            f"starting with a digit), got {value!r}"
        )
    if len(value) > MAX_IDENTIFIER:
        raise ConfigurationError(f"{store} {what} {value!r} is longer than {too_long}")
    return value


def check_batch_size(batch_size: object) -> int:
    """``purge_expired``'s ``batch_size``, which must be a positive integer."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


class DatabaseStore(ServerStore, Generic[_Handle]):
    """A server store on a SQL database: the plumbing, around a driver's statements."""

    #: The driver's errors that :meth:`_prepare` translates; anything else propagates.
    _DRIVER_ERRORS: tuple[type[BaseException], ...] = (Exception,)
    #: Where the store's data lives, for messages ("PostgreSQL at host:5432/db").
    _where: str

    def __init__(self, *, server_limits: bool, batching: frozenset[str] = ALL_OPERATIONS) -> None:
        """``server_limits``: whether the store sets the server's statement limits itself
        (it does on connections it opens, not on a borrowed pool or engine).
        ``batching``: which operations share statements."""
        self._server_limits = server_limits
        self._ready: _Handle | None = None  # set once connected and the table is checked
        self._lock = asyncio.Lock()
        self._store_timeout: float | None = None  # the smallest one setup() told us
        # Statements cut short, being cancelled on the server: their connections stay
        # checked out (they keep their pool slot) until the server has answered.
        self._settling: set[asyncio.Task[None]] = set()
        self._reads: Batcher[str] | None = Batcher(self._get_batch) if "get" in batching else None
        self._creates: Batcher[Write] | None = (
            Batcher(self._create_batch) if "create" in batching else None
        )
        self._updates: Batcher[Write] | None = (
            Batcher(self._update_batch) if "update" in batching else None
        )
        self._replaces: Batcher[Swap] | None = (
            Batcher(self._replace_batch) if "replace" in batching else None
        )

    # -- server-side limits and settling

    def set_store_timeout(self, seconds: float | None) -> None:
        """Make the server abandon statements just before ``store_timeout`` (see
        :meth:`AbstractStore.set_store_timeout`): 90% of the smallest budget it was told,
        on the connections this store opens (a borrowed pool or engine keeps its own
        settings, see docs/lifecycle.md)."""
        if seconds is not None and (self._store_timeout is None or seconds < self._store_timeout):
            self._store_timeout = seconds

    def _server_limit(self) -> float | None:
        """Seconds after which the server abandons a statement, where this store sets it."""
        if self._store_timeout is None or not self._server_limits:
            return None
        return self._store_timeout * SERVER_SHARE

    def _settle_budget(self) -> float:
        """Seconds a statement cut short may take to be cancelled before its connection is
        dropped: the server's own limit, plus a grace for its answer."""
        limit = self._server_limit()
        return SETTLE_DEFAULT if limit is None else limit + SETTLE_GRACE

    def _keep_settling(self, settle: Coroutine[Any, Any, None]) -> None:
        """Run ``settle`` (cancel a statement cut short, then free its connection) in the
        background: the caller that gave up does not wait for it; :meth:`close` does."""
        task = asyncio.get_running_loop().create_task(settle)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    # -- preparation and close

    async def _prepare(self) -> _Handle:
        """Connect and check (or create) the table once; concurrent callers share it."""
        async with self._lock:
            if self._ready is not None:
                return self._ready
            try:
                ready = await self._connect()
            except StoreError:
                raise
            except self._DRIVER_ERRORS as exc:
                raise self._translate(exc) from exc
            self._ready = ready
            return ready

    @abc.abstractmethod
    async def _connect(self) -> _Handle:
        """Open the pool if needed and check (or create) the table; called under the lock.

        Must leave nothing marked as ready when it fails: the next call tries again."""

    async def close(self) -> None:
        """Wait for the statements in flight and the cancels of those cut short, then close
        the pool or engine if this store created it; a borrowed one stays open."""
        for batcher in (self._reads, self._creates, self._updates, self._replaces):
            if batcher is not None:
                await batcher.drain()
        while self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        async with self._lock:
            self._ready = None
            await self._dispose()

    @abc.abstractmethod
    async def _dispose(self) -> None:
        """Close what this store created (called under the lock, once nothing is in flight)."""

    # -- the record operations, through the batchers

    async def get(self, key: str) -> bytes | None:
        if self._reads is None:
            return await self._get_one(key)
        data: bytes | None = await self._reads.call(key)
        return data

    async def create(self, key: str, data: bytes, ttl: int) -> bool:
        # If a lost attempt did commit, the retry finds a live row and returns False:
        # ServerStore then picks another id and the orphan expires. Never a double write.
        if self._creates is None:
            return await self._create_one((key, data, ttl))
        return bool(await self._creates.call((key, data, ttl)))

    async def update(self, key: str, data: bytes, ttl: int) -> bool:
        if self._updates is None:
            return await self._update_one((key, data, ttl))
        return bool(await self._updates.call((key, data, ttl)))

    async def replace(self, key: str, expected: bytes, data: bytes, ttl: int) -> bool:
        if self._replaces is None:
            return await self._replace_one((key, expected, data, ttl))
        return bool(await self._replaces.call((key, expected, data, ttl)))

    # One round trip per batch. A batch of one runs the single-row statement; a batch whose
    # statement fails on a query error (not an outage) is run again item by item, so that
    # what one caller sent fails that caller alone, as it did before batching.

    async def _get_batch(self, keys: list[str]) -> list[Any]:
        return await each_on_failure(keys, self._get_many, self._get_one)

    async def _create_batch(self, writes: list[Write]) -> list[Any]:
        return await each_on_failure(writes, self._create_many, self._create_one)

    async def _update_batch(self, writes: list[Write]) -> list[Any]:
        return await each_on_failure(writes, self._update_many, self._update_one)

    async def _replace_batch(self, swaps: list[Swap]) -> list[Any]:
        # Two swaps of one key in a batch (requests of one session saving together) must
        # behave as if one ran after the other: the second compares with what the first
        # left. One statement sees each row once, so the first swap of each key goes in one
        # statement, the second ones in the next, and so on: one round trip for a batch
        # of distinct keys, the common case.
        results: list[Any] = [None] * len(swaps)
        pending = list(range(len(swaps)))
        while pending:
            keys: set[str] = set()
            first: list[int] = []
            later: list[int] = []
            for index in pending:
                key = swaps[index][0]
                (later if key in keys else first).append(index)
                keys.add(key)
            try:
                done = await each_on_failure(
                    [swaps[index] for index in first], self._replace_many, self._replace_one
                )
            except StoreError as exc:
                # An outage fails this round's swaps, not those of an earlier round: they
                # were written, and their callers must hear so.
                done = [exc] * len(first)
            for index, result in zip(first, done, strict=True):
                results[index] = result
            pending = later
        return results

    @abc.abstractmethod
    async def _get_one(self, key: str) -> bytes | None:
        """The live payload under ``key``, in one statement."""

    @abc.abstractmethod
    async def _create_one(self, write: Write) -> bool:
        """Create one row (an expired one with the key may be replaced); False if live."""

    @abc.abstractmethod
    async def _update_one(self, write: Write) -> bool:
        """Update one live row; False if there is none."""

    @abc.abstractmethod
    async def _replace_one(self, swap: Swap) -> bool:
        """Write one live row whose payload is exactly the expected one; False if there is
        none (absent, expired or holding another payload)."""

    @abc.abstractmethod
    async def _get_many(self, keys: list[str]) -> list[Any]:
        """``_get_one`` for each key, in one round trip; a key may come twice."""

    @abc.abstractmethod
    async def _create_many(self, writes: list[Write]) -> list[Any]:
        """``_create_one`` for each write, in one round trip; a key may come twice."""

    @abc.abstractmethod
    async def _update_many(self, writes: list[Write]) -> list[Any]:
        """``_update_one`` for each write, in one round trip; a key may come twice."""

    @abc.abstractmethod
    async def _replace_many(self, swaps: list[Swap]) -> list[Any]:
        """``_replace_one`` for each swap, in one round trip; every key comes once."""

    # -- errors

    def _translate(self, exc: BaseException) -> StoreError:
        """The store exception for a driver error: StoreUnavailable or StoreError."""
        if self._is_unavailable(exc):
            detail = self._error_detail(exc) or "no details"
            return StoreUnavailable(
                f"{self._where} is unavailable ({type(exc).__name__}: {detail})"
            )
        named = self._named_error(exc)
        if named is not None:
            return named
        return StoreError(
            f"{self._where} failed a session query "
            f"({type(exc).__name__}: {self._error_detail(exc)})"
        )

    @abc.abstractmethod
    def _is_unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc`` means "the server cannot be used right now" (a 503), not "the
        query is wrong"."""

    def _error_detail(self, exc: BaseException) -> str:
        """What a message quotes of ``exc``."""
        return str(exc)

    def _named_error(self, exc: BaseException) -> StoreError | None:
        """A clearer message for an error the driver names (a missing table), or None."""
        return None
