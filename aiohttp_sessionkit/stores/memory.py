"""MemoryStore: sessions in this process's memory."""

from __future__ import annotations

import struct
import time
from itertools import islice
from typing import ClassVar

from ..abc import ServerStore
from ..exceptions import ConfigurationError
from ..ids import key_for_token

__all__ = ["MemoryStore"]

# Each record is one bytes object: the monotonic expiry time, then the payload. One object
# per session instead of a tuple and a float keeps a million sessions well under 500 MB.
_EXPIRY = struct.Struct("<d")
_EVICTION_SCAN = 64


class MemoryStore(ServerStore):
    """Sessions in a dict in this process: for development, tests and single-process apps.

    Not shared between processes or hosts, and lost on restart. Holds at most
    ``max_entries`` sessions: when full, a new session first evicts expired records among
    the least recently used, then the least recently used one. Payloads are stored as
    bytes, so mutating a value after the response cannot change the stored session.
    """

    local: ClassVar[bool] = True

    __slots__ = ("_max_entries", "_records")

    def __init__(self, *, max_entries: int = 100_000) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"max_entries={max_entries!r}: give a positive integer")
        self._max_entries = max_entries
        self._records: dict[str, bytes] = {}

    def __len__(self) -> int:
        """How many records are held, expired ones not yet evicted included."""
        return len(self._records)

    # ServerStore's load/save, without the await of get/create/update that a driver with
    # I/O needs: here a load is a dict lookup, and the coroutine hop cost more than it.
    async def load(self, token: str, *, namespace: str) -> bytes | None:
        return self.load_nowait(token, namespace)

    def load_nowait(self, token: str, namespace: str) -> bytes | None:
        # load() without its coroutine: the session layer calls this one (see AbstractStore).
        key = key_for_token(namespace, token)
        if key is None:
            return None
        # _get, inlined on purpose: a call fewer on every read. Measured under Valgrind, the
        # two calls of load_nowait/save_nowait into _get/_update cost 0.9% of a write, which
        # put the memory store under its target (0.90 x the adjusted memory limit).
        records = self._records
        record = records.pop(key, None)
        if record is None or _EXPIRY.unpack_from(record)[0] <= time.monotonic():
            return None
        records[key] = record  # re-inserting moves it to the most recently used end
        return record[_EXPIRY.size :]

    async def save(self, token: str | None, data: bytes, *, ttl: int, namespace: str) -> str | None:
        if token is None:  # ServerStore's create-only loop (through self.create)
            return await super().save(None, data, ttl=ttl, namespace=namespace)
        return self.save_nowait(token, data, ttl, namespace)

    def save_nowait(self, token: str | None, data: bytes, ttl: int, namespace: str) -> str | None:
        # save() without its coroutine, for updates only (see AbstractStore): a new session
        # goes through save() and ServerStore's create loop.
        if token is None:
            raise ValueError("MemoryStore.save_nowait updates a record; create one with save()")
        key = key_for_token(namespace, token)
        if key is None:
            return None
        records = self._records  # _update, inlined on purpose (see load_nowait)
        existing = records.pop(key, None)
        if existing is None:
            return None
        now = time.monotonic()
        if _EXPIRY.unpack_from(existing)[0] <= now:
            return None
        records[key] = _EXPIRY.pack(now + ttl) + data
        return token

    async def get(self, key: str) -> bytes | None:
        return self._get(key)

    async def create(self, key: str, data: bytes, ttl: int) -> bool:
        records = self._records
        now = time.monotonic()
        existing = records.get(key)
        if existing is not None and _EXPIRY.unpack_from(existing)[0] > now:
            return False
        if existing is None:
            if len(records) >= self._max_entries:
                self._evict(now)
        else:
            del records[key]  # so the re-created record counts as most recently used
        records[key] = _EXPIRY.pack(now + ttl) + data
        return True

    async def update(self, key: str, data: bytes, ttl: int) -> bool:
        return self._update(key, data, ttl)

    def _get(self, key: str) -> bytes | None:
        records = self._records
        record = records.pop(key, None)
        if record is None:
            return None
        if _EXPIRY.unpack_from(record)[0] <= time.monotonic():
            return None
        records[key] = record  # re-inserting moves it to the most recently used end
        return record[_EXPIRY.size :]

    def _update(self, key: str, data: bytes, ttl: int) -> bool:
        records = self._records
        existing = records.pop(key, None)
        if existing is None:
            return False
        now = time.monotonic()
        if _EXPIRY.unpack_from(existing)[0] <= now:
            return False
        records[key] = _EXPIRY.pack(now + ttl) + data
        return True

    async def remove(self, key: str) -> None:
        self._records.pop(key, None)

    async def purge_expired(self) -> int:
        now = time.monotonic()
        records = self._records
        expired = [k for k, r in records.items() if _EXPIRY.unpack_from(r)[0] <= now]
        for key in expired:
            del records[key]
        return len(expired)

    def _evict(self, now: float) -> None:
        records = self._records
        oldest = list(islice(records.items(), _EVICTION_SCAN))
        for key, record in oldest:
            if _EXPIRY.unpack_from(record)[0] <= now:
                del records[key]
        if len(records) >= self._max_entries:
            del records[next(iter(records))]
