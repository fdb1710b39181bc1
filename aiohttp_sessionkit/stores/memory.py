"""MemoryStore: sessions in this process's memory."""

from __future__ import annotations

import heapq
import struct
import time
from typing import ClassVar

from ..abc import Merge, ServerStore, mirrors
from ..exceptions import ConfigurationError, StoreUnavailable
from ..ids import key_for_token

__all__ = ["MemoryStore"]

# Each record is one bytes object: the monotonic expiry time, then the payload. One object
# per session instead of a tuple and a float keeps a million sessions well under 500 MB.
_EXPIRY = struct.Struct("<d")
# The expiry queue is rebuilt from the records once it holds this many entries more than
# twice the records (entries of records evicted, deleted or rewritten since): rebuilding
# costs one pass over the records, so it stays a constant cost per create.
_QUEUE_SLACK = 64


def _keep_nothing(current: bytes) -> None:
    """The ``Merge.rebase`` of a plain compare-and-swap: nothing to write over a change."""
    return None


class MemoryStore(ServerStore):
    """Sessions in a dict in this process: for development, tests and single-process apps.

    Not shared between processes or hosts, and lost on restart. Holds at most
    ``max_entries`` sessions. When full, a new session first drops every expired record,
    then the least recently used *anonymous* session: one that never went through
    ``new_session()`` or ``regenerate()``. Sessions that did (a login) are never evicted
    to make room; when every record is one of them and none has expired, creating a session
    raises :class:`~aiohttp_sessionkit.StoreUnavailable` (a 503 with ``Retry-After``).
    Payloads are stored as bytes, so mutating a value after the response cannot change the
    stored session.
    """

    local: ClassVar[bool] = True

    __slots__ = ("_anonymous", "_established", "_expiries", "_max_entries")

    def __init__(self, *, max_entries: int = 100_000) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"max_entries={max_entries!r}: give a positive integer")
        self._max_entries = max_entries
        # Two LRU dicts (re-inserting a key moves it to the most recently used end), so
        # that evicting the least recently used anonymous session never walks past the
        # idle logged-in users that an anonymous flood pushes to the front.
        self._anonymous: dict[str, bytes] = {}
        self._established: dict[str, bytes] = {}
        # (expiry, key), a heap. Every record has an entry no later than its expiry; an
        # entry whose record has gone or been rewritten is checked and dropped (or moved)
        # when it comes up. So "is anything expired?" is one look at the smallest entry.
        self._expiries: list[tuple[float, str]] = []

    def __len__(self) -> int:
        """How many records are held, expired ones not yet dropped included."""
        return len(self._anonymous) + len(self._established)

    # ServerStore's load/save, without the await of get/create/update that a driver with
    # I/O needs: here a load is a dict lookup, and the coroutine hop cost more than it.
    async def load(self, token: str, *, namespace: str) -> bytes | None:
        return self.load_nowait(token, namespace)

    @mirrors(load)
    def load_nowait(self, token: str, namespace: str) -> bytes | None:
        # load() without its coroutine: the session layer calls this one (see abc.mirrors).
        key = key_for_token(namespace, token)
        if key is None:
            return None
        return self._get(key)

    async def save(
        self,
        token: str | None,
        data: bytes,
        *,
        ttl: int,
        namespace: str,
        established: bool = False,
        merge: Merge | None = None,
    ) -> str | None:
        if token is None:  # ServerStore's create-only loop (through _create_record)
            return await self._save_new(data, ttl, namespace, established=established)
        return self.save_nowait(token, data, ttl, namespace, merge)

    @mirrors(save)
    def save_nowait(
        self, token: str | None, data: bytes, ttl: int, namespace: str, merge: Merge | None = None
    ) -> str | None:
        # save() without its coroutine, for updates only (see abc.mirrors): a new session
        # goes through save() and ServerStore's create loop. Nothing else runs between
        # the read and the write here, so a merge needs no retry loop.
        if token is None:
            raise ValueError("MemoryStore.save_nowait updates a record; create one with save()")
        key = key_for_token(namespace, token)
        if key is None:
            return None
        return token if self._update(key, data, ttl, merge) else None

    async def get(self, key: str) -> bytes | None:
        return self._get(key)

    async def create(self, key: str, data: bytes, ttl: int) -> bool:
        # Sessions are created through _create_record, which knows their kind. A direct
        # create() is a record the session layer keeps for security (a JWT deny-list entry,
        # a migrated legacy token's marker): evicting it for a visitor's session would
        # bring a revoked token back, so it is never evicted, only expired.
        return self._create(key, data, ttl, established=True)

    async def _create_record(self, key: str, data: bytes, ttl: int, established: bool) -> bool:
        return self._create(key, data, ttl, established=established)

    async def update(self, key: str, data: bytes, ttl: int) -> bool:
        return self._update(key, data, ttl)

    async def replace(self, key: str, expected: bytes, data: bytes, ttl: int) -> bool:
        # A merge that writes nothing unless the record still holds ``expected``.
        return self._update(key, data, ttl, Merge(expected, _keep_nothing))

    def _take(self, key: str) -> tuple[dict[str, bytes], bytes] | None:
        """Remove the record under ``key`` and return it with the dict it was in, for the
        caller to put back (re-inserting moves it to the most recently used end)."""
        records = self._anonymous
        record = records.pop(key, None)
        if record is None:
            records = self._established
            record = records.pop(key, None)
            if record is None:
                return None
        return records, record

    def _get(self, key: str) -> bytes | None:
        taken = self._take(key)
        if taken is None:
            return None
        records, record = taken
        if _EXPIRY.unpack_from(record)[0] <= time.monotonic():
            return None
        records[key] = record
        return record[_EXPIRY.size :]

    def _create(self, key: str, data: bytes, ttl: int, *, established: bool) -> bool:
        now = time.monotonic()
        queue = self._expiries
        if queue and queue[0][0] <= now:
            self._drop_expired(now)  # also frees the key below if its record has expired
        anonymous, kept = self._anonymous, self._established
        if key in anonymous or key in kept:
            return False  # live: _drop_expired just removed every expired record
        if len(anonymous) + len(kept) >= self._max_entries:
            if not anonymous:
                raise StoreUnavailable(
                    f"MemoryStore is full: its {self._max_entries} records are all live "
                    "sessions made by new_session() or regenerate(), which are never evicted; "
                    "raise max_entries, or shorten idle_timeout"
                )
            del anonymous[next(iter(anonymous))]  # the least recently used anonymous session
        expiry = now + ttl
        (kept if established else anonymous)[key] = _EXPIRY.pack(expiry) + data
        heapq.heappush(queue, (expiry, key))
        if len(queue) > 2 * (len(anonymous) + len(kept)) + _QUEUE_SLACK:
            self._rebuild_queue()
        return True

    def _update(self, key: str, data: bytes, ttl: int, merge: Merge | None = None) -> bool:
        """Rewrite the live record under ``key``; with ``merge``, ``data`` only while it
        still holds ``merge.base``, else ``merge.rebase`` of what it holds (see abc.Merge),
        in the same lookup."""
        taken = self._take(key)
        if taken is None:
            return False
        records, existing = taken
        now = time.monotonic()
        old = _EXPIRY.unpack_from(existing)[0]
        if old <= now:
            return False
        if merge is not None:
            current = existing[_EXPIRY.size :]
            if current != merge.base:
                rebased = merge.rebase(current)
                if rebased is None:  # it no longer opens: leave it as it is
                    records[key] = existing
                    return False
                data = rebased
        expiry = now + ttl
        if expiry < old:  # an earlier expiry than its queue entry: queue it again
            heapq.heappush(self._expiries, (expiry, key))
        records[key] = _EXPIRY.pack(expiry) + data
        return True

    async def remove(self, key: str) -> None:
        if self._anonymous.pop(key, None) is None:
            self._established.pop(key, None)

    async def purge_expired(self) -> int:
        return self._drop_expired(time.monotonic())

    def _drop_expired(self, now: float) -> int:
        """Delete every record expired at ``now``; return how many went."""
        queue = self._expiries
        anonymous, kept = self._anonymous, self._established
        dropped = 0
        while queue and queue[0][0] <= now:
            _, key = heapq.heappop(queue)
            records = anonymous
            record = records.get(key)
            if record is None:
                records = kept
                record = records.get(key)
                if record is None:
                    continue  # deleted or evicted since
            expiry = _EXPIRY.unpack_from(record)[0]
            if expiry <= now:
                del records[key]
                dropped += 1
            else:  # rewritten with a later expiry since this entry was queued
                heapq.heappush(queue, (expiry, key))
        return dropped

    def _rebuild_queue(self) -> None:
        unpack = _EXPIRY.unpack_from
        queue = [(unpack(r)[0], k) for k, r in self._anonymous.items()]
        queue += [(unpack(r)[0], k) for k, r in self._established.items()]
        heapq.heapify(queue)
        self._expiries = queue
