"""The store contract.

The session layer (``Session``, the middleware, cookies, serialization, expiry, fixation
defence) is shared by every store. A store only moves opaque payloads (``bytes``) by token.
There are two kinds of store:

* :class:`AbstractStore` is the whole contract the middleware talks to. The encrypted-cookie
  store implements it directly: its *token* is the sealed payload itself.
* :class:`ServerStore` implements :class:`AbstractStore` for stores that keep the payload on
  a server (memory, Redis, PostgreSQL, MongoDB). It owns the parts that must be right once:
  ids of 256 random bits, the shape check that keeps a malformed id from ever reaching the
  server, hashing the id into the record key, create-only and update-only writes. A driver
  subclasses it and implements four record operations: :meth:`ServerStore.get`,
  :meth:`ServerStore.create`, :meth:`ServerStore.update` and :meth:`ServerStore.remove`.

Error contract for every method: a store that cannot be reached (connection refused, reset,
authentication failure, server-side timeout) raises
:class:`~aiohttp_sessionkit.exceptions.StoreUnavailable`. The session layer also enforces a
time budget per call (``setup(..., store_timeout=...)``) and turns an overrun into the same
exception, so drivers need not add their own timeouts.

Expiry is enforced twice: natively by the store (``ttl`` below: Redis ``EX``, a Mongo TTL
index, an ``expires_at`` column) so that abandoned records go away, and by the session layer
on every load, from the creation and last-access times inside the payload. A store may
therefore return a record that has just expired; it must never return one past its ``ttl``
by more than its native expiry lag.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from .exceptions import StoreError
from .ids import key_for_token, new_session_id, record_key

__all__ = ["AbstractStore", "ServerStore"]


class AbstractStore(abc.ABC):
    """What the session middleware needs from a store.

    Methods receive a ``namespace``: the cookie name the session is set up under. One store
    object may serve several cookie names; a token issued under one namespace must not open
    under another.
    """

    #: True when the data lives in the client (the cookie store): it cannot revoke a copy of
    #: the cookie, and ``delete`` only forgets.
    client_side: ClassVar[bool] = False
    #: True when operations finish without network or disk I/O (memory, cookie): the
    #: session layer then skips the per-operation time budget.
    local: ClassVar[bool] = False

    async def open(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Prepare connections, tables, indexes. Called once on application startup.

        Idempotent. A store must also work when ``open`` was never called (it then connects
        on first use), because ``session_middleware`` users have no startup hook.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Release what the store created itself. Called on application cleanup.

        A store closes only the clients it created (from a URL); a client handed to it by the
        application is borrowed and left open. Idempotent.
        """

    async def purge_expired(self) -> int:
        """Delete expired records now; return how many went. Stores with native expiry return 0."""
        return 0

    @abc.abstractmethod
    async def load(self, token: str, *, namespace: str) -> bytes | None:
        """Return the payload saved under ``token``.

        Args:
            token: the cookie value the client presented, unvalidated: it may be any string.
            namespace: the cookie name.

        Returns:
            The bytes last saved, or ``None`` when the token is malformed, unknown, deleted
            or expired. Never creates anything; never raises for a bad token.
        """

    @abc.abstractmethod
    async def save(self, token: str | None, data: bytes, *, ttl: int, namespace: str) -> str | None:
        """Write ``data`` and return the token to put in the cookie.

        Args:
            token: ``None`` to create a new record; the store then picks a fresh token.
                Otherwise the token of a record loaded earlier in this request: update only.
            data: the opaque payload.
            ttl: seconds after which the store may forget the record; always >= 1.
            namespace: the cookie name.

        Returns:
            The token for the cookie. For an update, ``None`` when the record no longer
            exists (a concurrent logout deleted it, or it expired): an update never
            re-creates a record, so a slow request cannot bring back a session that was
            logged out while it ran.
        """

    @abc.abstractmethod
    async def delete(self, token: str, *, namespace: str) -> None:
        """Delete the record behind ``token``. Idempotent; a malformed token is ignored."""


class ServerStore(AbstractStore):
    """Base class for stores that keep payloads on a server, keyed by a hash of the id.

    Subclasses implement the four record operations below. Each receives a ``key``: a
    64-character lowercase hex string (SHA-256 of namespace and session id), safe to use as
    a Redis key, a primary key or a document ``_id`` as it is.
    """

    #: How many fresh ids to try when ``create`` reports a collision before giving up.
    #: With 256-bit ids a collision means the store is misbehaving, not bad luck.
    create_attempts: ClassVar[int] = 3

    async def load(self, token: str, *, namespace: str) -> bytes | None:
        key = key_for_token(namespace, token)
        return None if key is None else await self.get(key)

    async def save(self, token: str | None, data: bytes, *, ttl: int, namespace: str) -> str | None:
        if token is not None:
            key = key_for_token(namespace, token)
            if key is None:
                return None
            return token if await self.update(key, data, ttl) else None
        for _ in range(self.create_attempts):
            session_id = new_session_id()
            if await self.create(record_key(namespace, session_id), data, ttl):
                return session_id
        raise StoreError(
            f"{type(self).__name__} refused {self.create_attempts} fresh random keys as "
            "duplicates; the store is not honouring create-only writes"
        )

    async def delete(self, token: str, *, namespace: str) -> None:
        key = key_for_token(namespace, token)
        if key is not None:
            await self.remove(key)

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """Return the payload stored under ``key``, or ``None`` if absent or past its expiry.

        A store whose native expiry lags (PostgreSQL rows, MongoDB's TTL monitor) filters
        on the stored expiry time in the query itself.
        """

    @abc.abstractmethod
    async def create(self, key: str, data: bytes, ttl: int) -> bool:
        """Store a new record that expires after ``ttl`` seconds.

        Returns:
            True if written; False, writing nothing, if a live record already has this key.
            An expired record with the key may be replaced.
        """

    @abc.abstractmethod
    async def update(self, key: str, data: bytes, ttl: int) -> bool:
        """Replace a live record's payload and reset its expiry to ``ttl`` seconds from now.

        Returns:
            True if written; False, writing nothing, if no live record has this key.
        """

    @abc.abstractmethod
    async def remove(self, key: str) -> None:
        """Delete the record if it exists. Idempotent."""
