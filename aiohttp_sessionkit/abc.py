"""Every contract the session layer talks to: stores, transports and legacy readers.

The session layer (``Session``, the middleware, serialization, expiry, fixation defence) is
shared by every store and every transport. Three small seams hang off it:

* a **store** (:class:`AbstractStore`) moves a session's payload by token;
* a **transport** (:class:`AbstractTransport`) carries the token between client and server:
  a cookie for browsers, a request header such as ``Authorization: Bearer`` for API clients;
* a **legacy reader** (:class:`AbstractLegacyReader`) opens sessions that another library
  wrote, so that switching to this one logs nobody out.

Stores
------
A store moves opaque payloads by token. The payload is ``bytes`` (the session layer's binary
format) unless the store overrides :meth:`AbstractStore.dump` and
:meth:`AbstractStore.restore`: the JWT store does, because a token's claims must be the
session's own data. There are two kinds of store:

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
import asyncio
import contextlib
import hashlib
import inspect
import json
import random
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from . import session as _clock
from .cookies import CookieParams
from .exceptions import StoreContention, StoreError
from .ids import key_for_token, new_session_id, record_key
from .serializers import Serializer
from .session import DEFAULT_CLOCK_SKEW_TOLERANCE, Session, decode_payload, encode_payload

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "AbstractLegacyReader",
    "AbstractStore",
    "AbstractTransport",
    "LegacySession",
    "Merge",
    "ServerStore",
    "UserRecord",
    "mirrors",
    "nowait_twin",
]

_Twin = TypeVar("_Twin", bound=Callable[..., Any])

#: (id of a store, record key) -> the lock that this process's compare-and-swap writers of
#: that record queue on, first come first served (ServerStore._in_line). Weak: an entry goes
#: with its last user.
_WRITER_LINES: weakref.WeakValueDictionary[tuple[int, str], asyncio.Lock] = (
    weakref.WeakValueDictionary()
)

#: The attribute :func:`mirrors` sets on a twin: the function object it mirrors.
_MIRRORS = "__sessionkit_mirrors__"


def mirrors(operation: Callable[..., Any]) -> Callable[[_Twin], _Twin]:
    """Declare the decorated method the synchronous twin of the store's ``operation``.

    The synchronous path, an optional part of the store contract: a store whose operations
    finish without I/O (``local = True``) may define

    * ``load_nowait(self, token: str, namespace: str) -> Any | None``, and
    * ``save_nowait(self, token: str | None, data: Any, ttl: int, namespace: str) -> str | None``

    with exactly the results of ``load`` and ``save`` (arguments positional), each declared
    with the very function it mirrors, in the same class body::

        async def load(self, token: str, *, namespace: str) -> bytes | None:
            return self.load_nowait(token, namespace)

        @mirrors(load)
        def load_nowait(self, token: str, namespace: str) -> bytes | None: ...

    The session layer then calls the twin instead of the coroutine: no coroutine is created
    for a request whose session is a dict lookup or a cached decryption away. It does so only
    while the store's ``load`` (``save``) *is* the declared function (see
    :func:`nowait_twin`), so that anything replacing it (a subclass's override, a wrapper
    put on the class by instrumentation or a test spy) always runs.

    A server-side store's ``save_nowait`` is called for updates only (``token`` is not
    ``None``): a new record always goes through ``save``, so ServerStore's create loop runs.
    """

    def declare(twin: _Twin) -> _Twin:
        setattr(twin, _MIRRORS, operation)
        return twin

    return declare


def nowait_twin(store: AbstractStore, operation: str) -> Callable[..., Any] | None:
    """``store.load_nowait`` (``operation="load"``) or ``store.save_nowait`` (``"save"``) when
    the session layer may call it in place of the coroutine, else ``None``.

    The one place that decides: the store is ``local``, its twin is declared with
    :func:`mirrors`, and ``operation`` as the store would run it is the declared function
    itself (looked up without binding, on the instance and then its class: a wrapper, in
    either place, is a different object and turns the synchronous path off).
    """
    if not store.local:
        return None
    twin = getattr(store, f"{operation}_nowait", None)
    mirrored = getattr(twin, _MIRRORS, None)
    if mirrored is None or inspect.getattr_static(store, operation, None) is not mirrored:
        return None
    return twin


@dataclass(frozen=True, slots=True)
class Merge:
    """What a merging update needs besides its payload: how to combine this request's
    changes with a save that another request made after this one loaded the session.

    The session layer passes one to a store's ``save`` for an update of a record it loaded
    (see :meth:`AbstractStore.save`, keyword ``merge``). It never holds a token.
    """

    #: The payload exactly as this request loaded it (what :meth:`AbstractStore.load`
    #: returned). While the record still holds it, nobody else saved since: the store may
    #: write the new payload over it as it is.
    base: Any
    #: ``rebase(current)``: this request's changes (keys set, keys deleted, flash messages
    #: added or shown) applied to ``current``, a payload another request saved meanwhile;
    #: returns the payload to write instead, or ``None`` when ``current`` does not open (the
    #: session ended: write nothing). Pure: no I/O, safe to call again on each retry.
    rebase: Callable[[Any], Any | None]


#: The most sessions one user's index names (a server-side store's hard ceiling per user):
#: binding one more ends the user's session created longest ago. ``setup`` refuses a
#: ``max_sessions_per_user`` above it.
USER_INDEX_LIMIT = 1000
#: The longest user id (characters, after ``str()`` of an int) a session may be bound to.
MAX_USER_ID_LENGTH = 16_384
#: The longest User-Agent kept by ``setup(..., record_client=True)``; longer ones are cut.
MAX_USER_AGENT_LENGTH = 256
#: The longest remote address kept by ``setup(..., record_client=True)``.
MAX_REMOTE_LENGTH = 64

#: ``last_seen(payload)``: the session layer's judgement of one record, for the user the
#: call is about: the session's last access (epoch seconds) when ``payload`` opens as a live
#: session bound to that user, else ``None`` (expired, garbage, or bound to someone else).
#: Pure and cheap; it keeps the store's index code free of the payload format.
LastSeen = Callable[[Any], "int | None"]


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One session of a user, as a store's user index found it (see
    :meth:`~aiohttp_sessionkit.AbstractStore.user_records`): live, and bound to that user
    when it was read."""

    #: The record's non-secret handle (:meth:`~aiohttp_sessionkit.AbstractStore.handle`):
    #: it cannot open the session, only name it to
    #: :meth:`~aiohttp_sessionkit.AbstractStore.end_handle`.
    handle: str
    #: The record's payload, opaque to the store (the session layer restores it).
    payload: Any
    #: What ``bind_user`` recorded: creation (epoch seconds) and the client, if recorded.
    created: int
    user_agent: str | None = None
    remote: str | None = None


class AbstractStore(abc.ABC):
    """What the session middleware needs from a store.

    Methods receive a ``namespace``: the cookie name the session is set up under. One store
    object may serve several cookie names; a token issued under one namespace must not open
    under another.
    """

    #: True when the token *is* the data (the cookie store, the JWT store): every save
    #: returns a new token, and the session has no server-side id.
    client_side: ClassVar[bool] = False
    #: True when operations finish without network or disk I/O (memory, cookie): the
    #: session layer then skips the per-operation time budget.
    local: ClassVar[bool] = False
    #: The class the session layer instantiates for this store's sessions: a store whose
    #: sessions have rules of their own (reserved keys, read-only) names a subclass.
    session_class: ClassVar[type[Session]] = Session

    @property
    def revocable(self) -> bool:
        """True when :meth:`delete` makes every copy of the token worthless (a logout that
        really logs out). A client-side store without a deny list cannot revoke: logging out
        deletes the client's copy, but one taken earlier works until it expires."""
        return not self.client_side

    def dump(self, session: Session, serializer: Serializer, accessed: int) -> Any:
        """Turn ``session`` into the payload :meth:`save` receives.

        The default is the session layer's binary format (creation and access times,
        max_age, data and flashes, serialized by ``serializer``). A store overrides it,
        together with :meth:`restore`, when the payload must be something else (the JWT
        store makes the session's claims). Raises ``SerializationError`` naming a value
        that cannot be stored; nothing is written then.
        """
        return encode_payload(session, serializer, accessed)

    def restore(
        self,
        payload: Any,
        serializer: Serializer,
        *,
        identity: str | None,
        idle_timeout: int,
        absolute_timeout: int,
        clock_skew_tolerance: int = DEFAULT_CLOCK_SKEW_TOLERANCE,
    ) -> Session | None:
        """Rebuild a session from what :meth:`load` returned.

        Returns ``None`` when the payload is malformed, expired (``idle_timeout``,
        ``absolute_timeout``, or the session's own ``max_age``) or from the future by more
        than ``clock_skew_tolerance`` seconds (``setup(..., clock_skew_tolerance=...)``).
        Never raises for bad input. ``identity`` is the session id the session reports
        (``None`` for a client-side store). An override written before
        ``clock_skew_tolerance`` existed keeps working: the session layer passes it only
        to a ``restore`` that accepts it.
        """
        return decode_payload(
            payload,
            serializer,
            identity=identity,
            idle_timeout=idle_timeout,
            absolute_timeout=absolute_timeout,
            clock_skew_tolerance=clock_skew_tolerance,
        )

    # -- optional: operations that never wait ------------------------------------------------
    #
    # A ``local`` store may give ``load`` and ``save`` synchronous twins, declared with
    # :func:`mirrors` (see there): ``load_nowait(token, namespace)`` and
    # ``save_nowait(token, data, ttl, namespace)``. They are not declared here, so that a
    # store without them has no such attribute; :func:`nowait_twin` decides whether the
    # session layer may call one.

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

    def set_absolute_timeout(self, seconds: int) -> None:  # noqa: B027 - optional hook
        """Learn the longest a session of this store can live (``setup(...,
        absolute_timeout=...)``, or its default).

        ``setup`` calls it before :meth:`open`, once per session set up on the store. A store
        that remembers ended sessions (a client-side store's deny list) keeps each entry that
        long, and no longer; with several sessions set up on one store it keeps the longest.
        The default does nothing.
        """

    def set_store_timeout(self, seconds: float | None) -> None:  # noqa: B027 - optional hook
        """Learn the session layer's time budget per call (``setup(..., store_timeout=...)``).

        ``setup`` calls it before :meth:`open`, once per session set up on the store
        (``None``: that session has no budget). A store whose server can abandon work on
        its own (a statement timeout) should make it give up just before the smallest
        budget it was told, so that a call the session layer answered with 503 is not
        still running, and cannot still commit, on the server. The default does nothing.
        """

    # -- optional: a user's sessions (setup(..., user_key=...)) --------------------------------
    #
    # The session layer binds a session to a user when it is saved with ``session[user_key]``
    # set, and calls the methods below, uniformly for every store; what a store can do is
    # told by two properties. Payloads stay opaque: where a store must judge a record (is it
    # still a live session of this user? when was it last used?) the session layer hands it
    # a ``last_seen`` function (see ``abc.LastSeen``), as a merging update hands ``rebase``.
    # User ids arrive as ``str`` (the session layer turns an int into its decimal form), at
    # most MAX_USER_ID_LENGTH characters. Every method raises StoreUnavailable when the
    # store cannot be reached, and leaves what it did not get to as it was.

    @property
    def user_index(self) -> bool:
        """True when the store keeps an index of sessions by user: :meth:`bind_user`,
        :meth:`unbind_user`, :meth:`user_records`, :meth:`load_handle`,
        :meth:`end_handle` and :meth:`end_user` all work. ServerStore has one when the
        driver implements :meth:`ServerStore.replace`."""
        return False

    @property
    def user_cutoff(self) -> bool:
        """True when the store ends a user's sessions by a per-user cutoff time instead of
        an index (a client-side store with a deny list): :meth:`end_user` then refuses
        every token of the user issued before it except the session whose handle is
        ``keep`` (the request's own, with ``keep_current``). :meth:`bind_user` and
        :meth:`unbind_user` are then no-ops or cheap, and listing is not possible
        (:attr:`user_index` is False). The session layer treats both kinds alike."""
        return False

    def set_user_key(self, user_key: str) -> None:  # noqa: B027 - optional hook
        """Learn the session key that holds the user's id (``setup(..., user_key=...)``),
        before :meth:`open`. A store that judges payloads itself (a cutoff checked in
        :meth:`restore`) needs it; the default does nothing."""

    def handle(self, token: str, *, namespace: str) -> str | None:
        """The non-secret handle of the session ``token`` opens, or ``None`` when the token
        is malformed (or the store has no handles). A handle names a session to
        :meth:`end_handle` but cannot be turned back into its token."""
        return None

    async def bind_user(
        self,
        token: str,
        user: str,
        *,
        namespace: str,
        created: int,
        until: int,
        last_seen: LastSeen,
        limit: int | None = None,
        user_agent: str | None = None,
        remote: str | None = None,
    ) -> int:
        """Add the session ``token`` names (just saved) to ``user``'s sessions.

        Args:
            created: the session's creation time (epoch seconds).
            until: the latest the session can live (its creation plus the absolute
                timeout): an index entry need not outlive it.
            last_seen: judges the user's other records when some must go (see ``abc.LastSeen``).
            limit: at most this many live sessions for the user, this one included: the
                least recently active others (by ``last_seen``) are ended. Whatever it is,
                the store's own ceiling (USER_INDEX_LIMIT) applies.
            user_agent, remote: the client, when the application records it.

        Returns:
            How many of the user's other sessions were ended to respect a limit.
            Idempotent for one token.
        """
        raise self._no_user_index()

    async def unbind_user(self, handle: str, user: str, *, namespace: str) -> None:
        """Take the session ``handle`` names out of ``user``'s sessions (the session was
        ended, or now belongs to no one or another user). Idempotent; the record itself is
        left alone."""
        raise self._no_user_index()

    async def user_records(
        self, user: str, *, namespace: str, last_seen: LastSeen
    ) -> list[UserRecord]:
        """``user``'s live sessions, in no particular order. Records gone, expired, or no
        longer the user's (``last_seen`` says ``None``) are left out, and dropped from the
        index when the store can do so in passing."""
        raise self._no_user_index()

    async def load_handle(self, handle: str, *, namespace: str) -> Any | None:
        """The payload of the live record ``handle`` names, or ``None`` (unknown, expired,
        or not shaped like a handle of this store: never raises for a bad handle)."""
        raise self._no_user_index()

    async def end_handle(self, handle: str, *, namespace: str) -> None:
        """Delete the record ``handle`` names. Idempotent; a malformed handle is ignored.
        The caller (the session layer) has checked what it ends."""
        raise self._no_user_index()

    async def end_user(
        self, user: str, *, namespace: str, last_seen: LastSeen, keep: str | None = None
    ) -> int:
        """End every session of ``user`` except the one whose handle is ``keep``: a record
        is ended only when ``last_seen`` says it is still a live session of that user, so a
        stale entry never ends someone else's session. Returns how many were ended (a
        cutoff store, which cannot count, returns 0). A request of the user still running
        cannot bring an ended session back (updates never re-create)."""
        raise self._no_user_index()

    def _no_user_index(self) -> StoreError:
        return StoreError(
            f"{type(self).__name__} keeps no index of sessions by user: listing and ending a "
            "user's sessions needs a server-side store whose driver implements replace() "
            "(memory, Redis, PostgreSQL, SQLAlchemyStore, MongoDB, memcached)"
        )

    @abc.abstractmethod
    async def load(self, token: str, *, namespace: str) -> Any | None:
        """Return the payload saved under ``token`` (``bytes`` unless :meth:`restore` is
        overridden).

        Args:
            token: the cookie value the client presented, unvalidated: it may be any string.
            namespace: the cookie name.

        Returns:
            The bytes last saved, or ``None`` when the token is malformed, unknown, deleted
            or expired. Never creates anything; never raises for a bad token.
        """

    @abc.abstractmethod
    async def save(self, token: str | None, data: Any, *, ttl: int, namespace: str) -> str | None:
        """Write ``data`` (what :meth:`dump` made) and return the token the client presents.

        Args:
            token: ``None`` to create a new record; the store then picks a fresh token.
                Otherwise the token of a record loaded earlier in this request: update only.
            data: the payload from :meth:`dump`, opaque to the store unless it overrides dump.
            ttl: seconds after which the store may forget the record; always >= 1.
            namespace: the cookie name.

        Returns:
            The token for the client (cookie value or header token). For an update,
            ``None`` when the record no longer exists (a concurrent logout deleted it, or
            it expired): an update never
            re-creates a record, so a slow request cannot bring back a session that was
            logged out while it ran.

        Optional keyword ``established: bool = False``, passed only to a store whose
        ``save`` declares a parameter of that name (checked once, at setup), so a store
        written without it keeps working: with ``token=None``, True when the session went
        through ``new_session()`` or ``regenerate()`` (a login) or was moved over by a
        legacy reader. A store that evicts live records to make room (MemoryStore) must
        never evict such a record for one created with False; an update keeps the record's
        kind.

        Optional keyword ``merge: Merge | None = None``, passed (like ``established``) only
        to a store whose ``save`` declares it, and only for an update of a record this
        request loaded: a store that takes it must not lose another request's save made
        since the load. It writes ``data`` only while the record still holds
        ``merge.base``; otherwise it writes ``merge.rebase(current)`` in place of the
        record's current payload, atomically (compare-and-swap, a transaction, a server
        script), retrying a bounded number of times and then raising
        :class:`~aiohttp_sessionkit.exceptions.StoreContention` (a 503), having written
        nothing. A store whose ``save`` does not take it writes ``data`` as it is: the last
        writer wins, as in every session library before this one. :class:`ServerStore`
        implements it for every driver that implements :meth:`ServerStore.replace`.
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
    #: How many times a merging update (``save(..., merge=...)``) writes before it gives
    #: up with :class:`~aiohttp_sessionkit.exceptions.StoreContention`: each failed attempt
    #: means another request saved the same session in between, so this bounds how many
    #: such saves one request can lose the race to.
    merge_attempts: ClassVar[int] = 16
    #: Seconds: after its n-th lost compare-and-swap, a merging update (or a write of a
    #: user's index) waits a random time up to ``min(merge_backoff_cap, merge_backoff *
    #: 2**n)`` before it reads the record again, so that writers from several processes
    #: racing on one record spread out instead of colliding again.
    merge_backoff: ClassVar[float] = 0.001
    merge_backoff_cap: ClassVar[float] = 0.05

    async def _back_off(self, attempt: int) -> None:
        """The random pause after the ``attempt``-th lost compare-and-swap on a record."""
        await asyncio.sleep(
            random.random() * min(self.merge_backoff_cap, self.merge_backoff * 2**attempt)
        )

    @property
    def merges(self) -> bool:
        """True when updates merge concurrent changes: the driver implements :meth:`replace`."""
        return type(self).replace is not ServerStore.replace

    async def load(self, token: str, *, namespace: str) -> bytes | None:
        key = key_for_token(namespace, token)
        return None if key is None else await self.get(key)

    async def save(
        self,
        token: str | None,
        data: bytes,
        *,
        ttl: int,
        namespace: str,
        merge: Merge | None = None,
    ) -> str | None:
        if token is not None:
            key = key_for_token(namespace, token)
            if key is None:
                return None
            if merge is not None and self.merges:
                return token if await self._merge(key, data, ttl, merge) else None
            return token if await self.update(key, data, ttl) else None
        return await self._save_new(data, ttl, namespace, established=False)

    @contextlib.asynccontextmanager
    async def _in_line(self, key: str) -> AsyncIterator[bool]:
        """Hold the turn of this process's compare-and-swap writers of record ``key``: they
        queue, first come first served; yields whether this one had to wait.

        Letting them all try at once wastes a round trip on each loser, and lets a writer
        that lost keep losing to fresh arrivals that jump ahead of it (measured: under CPU
        load, one request lost 16 times in a row to newcomers and got a 503)."""
        turn = (id(self), key)
        line = _WRITER_LINES.get(turn)
        if line is None:
            line = _WRITER_LINES[turn] = asyncio.Lock()
        waited = line.locked()
        async with line:
            yield waited

    async def _merge(self, key: str, data: bytes, ttl: int, merge: Merge) -> bool:
        """Write ``data`` over ``merge.base``, or this request's changes over whatever another
        save left since (see :class:`Merge`): True once written, False when the record is
        gone (a logout, a login, expiry: nothing is written, nothing comes back)."""
        # Of N saves racing on one record only one compare-and-swap can win per round: in
        # this process they queue (see _in_line), and a save loses only to saves from other
        # processes, hence the bounded retries with random waits.
        async with self._in_line(key) as waited:
            # A save that waited in line finds the record changed (almost always): it skips
            # the write over the payload it loaded, which would only fail.
            if not waited and await self.replace(key, merge.base, data, ttl):
                return True  # nobody saved since the load: one round trip, as an update
            for attempt in range(1, self.merge_attempts):
                current = await self.get(key)
                if current is None:
                    return False
                rebased = merge.rebase(current)
                if rebased is None:
                    return False
                if await self.replace(key, current, rebased, ttl):
                    return True
                await self._back_off(attempt)
        raise StoreContention(
            f"{type(self).__name__}: {self.merge_attempts} saves of one session by other "
            "requests each landed between this request's read and write; nothing was written"
        )

    async def _save_new(self, data: bytes, ttl: int, namespace: str, *, established: bool) -> str:
        """Create a record under a fresh id; return the id."""
        for _ in range(self.create_attempts):
            session_id = new_session_id()
            if await self._create_record(record_key(namespace, session_id), data, ttl, established):
                return session_id
        raise StoreError(
            f"{type(self).__name__} refused {self.create_attempts} fresh random keys as "
            "duplicates; the store is not honouring create-only writes"
        )

    async def delete(self, token: str, *, namespace: str) -> None:
        key = key_for_token(namespace, token)
        if key is not None:
            await self.remove(key)

    async def _create_record(self, key: str, data: bytes, ttl: int, established: bool) -> bool:
        # create() and save()'s ``established``, which the drivers' create() does not take:
        # only MemoryStore evicts live records, and it overrides this.
        return await self.create(key, data, ttl)

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

    async def replace(self, key: str, expected: bytes, data: bytes, ttl: int) -> bool:
        """Optional, atomic compare-and-swap: replace the live record's payload with ``data``
        and reset its expiry to ``ttl`` seconds from now, only if its payload is exactly
        ``expected`` (byte for byte).

        Returns:
            True if written; False, writing nothing, if no live record has this key or its
            payload differs. The comparison and the write are one atomic step on the server
            (a script, a conditional ``UPDATE ... WHERE data = ...``, a filtered
            ``update_one``, memcached's ``cas``), so that of two requests racing from the
            same payload exactly one wins.

        A driver that implements it gets merging updates (:attr:`merges`); one that does not
        keeps the whole-record :meth:`update`, where the last writer wins.
        """
        raise NotImplementedError

    # -- the user index, generic over get/create/replace/remove ------------------------------
    #
    # One record per (namespace, user), under a key hashed from both (never the user id
    # itself), holding {handle: [created, until, user_agent, remote]}. It is written only by
    # compare-and-swap (create when absent, replace otherwise), so two logins of one user
    # on two processes never lose an entry, and every operation is on one key: no
    # cross-slot command on Redis Cluster, no new table or column anywhere. Its ttl is the
    # latest ``until`` among its entries, so it expires natively no later than the sessions
    # it names; entries whose record is gone are dropped whenever the index is read to be
    # written or listed.

    #: How many times an index write retries after another writer changed the index in
    #: between, before StoreContention (a 503, nothing half-written).
    index_attempts: ClassVar[int] = 16
    #: The ceiling per user (see USER_INDEX_LIMIT); a class attribute so a store can lower it.
    user_index_limit: ClassVar[int] = USER_INDEX_LIMIT

    @property
    def user_index(self) -> bool:
        return self.merges

    def handle(self, token: str, *, namespace: str) -> str | None:
        return key_for_token(namespace, token)

    async def bind_user(
        self,
        token: str,
        user: str,
        *,
        namespace: str,
        created: int,
        until: int,
        last_seen: LastSeen,
        limit: int | None = None,
        user_agent: str | None = None,
        remote: str | None = None,
    ) -> int:
        handle = key_for_token(namespace, token)
        if handle is None:
            return 0
        cap = self.user_index_limit if limit is None else min(limit, self.user_index_limit)
        ended: set[str] = set()

        async def add(entries: dict[str, list[Any]]) -> dict[str, list[Any]]:
            entries[handle] = [created, until, user_agent, remote]
            if len(entries) <= cap:
                return entries
            others = [h for h in entries if h != handle]
            if limit is not None and limit <= cap:
                # The application's cap: judge every other session by its last activity.
                candidates = others
            else:
                # The ceiling only: look at as few records as it takes, oldest first.
                candidates = sorted(others, key=lambda h: entries[h][0])[: len(entries) - cap]
            activity = await self._judge(candidates, last_seen)
            for h in candidates:
                if activity.get(h) is None:
                    del entries[h]  # gone, expired or someone else's: only the entry goes
            excess = len(entries) - cap
            if excess > 0:
                for h in sorted(activity, key=lambda h: activity[h])[:excess]:
                    await self.remove(h)
                    ended.add(h)
                    del entries[h]
            return entries

        await self._edit_index(namespace, user, add)
        return len(ended)

    async def unbind_user(self, handle: str, user: str, *, namespace: str) -> None:
        async def drop(entries: dict[str, list[Any]]) -> dict[str, list[Any]] | None:
            if handle not in entries:
                return None  # nothing to write
            del entries[handle]
            return entries

        await self._edit_index(namespace, user, drop)

    async def user_records(
        self, user: str, *, namespace: str, last_seen: LastSeen
    ) -> list[UserRecord]:
        key = _user_index_key(namespace, user)
        raw = await self.get(key)
        entries = _read_index(raw)
        handles = list(entries)
        payloads = await asyncio.gather(*(self.get(h) for h in handles))
        found = []
        for h, payload in zip(handles, payloads, strict=True):
            if payload is None or last_seen(payload) is None:
                del entries[h]
                continue
            created, _, user_agent, remote = entries[h]
            found.append(UserRecord(h, payload, created, user_agent, remote))
        if raw is not None and len(entries) < len(handles):
            # Cleaned in passing, once: a failed swap means another writer is at it.
            await self._swap_index(key, raw, entries)
        return found

    async def load_handle(self, handle: str, *, namespace: str) -> bytes | None:
        return await self.get(handle) if _is_handle(handle) else None

    async def end_handle(self, handle: str, *, namespace: str) -> None:
        if _is_handle(handle):
            await self.remove(handle)

    async def end_user(
        self, user: str, *, namespace: str, last_seen: LastSeen, keep: str | None = None
    ) -> int:
        ended: set[str] = set()

        async def end(entries: dict[str, list[Any]]) -> dict[str, list[Any]]:
            others = [h for h in entries if h != keep]
            activity = await self._judge(others, last_seen)
            for h in others:
                if activity.get(h) is not None:
                    await self.remove(h)
                    ended.add(h)
                del entries[h]
            return entries

        await self._edit_index(namespace, user, end)
        return len(ended)

    async def _judge(self, handles: list[str], last_seen: LastSeen) -> dict[str, int]:
        """``last_seen`` of the records ``handles`` name that are live sessions of the user."""
        payloads = await asyncio.gather(*(self.get(h) for h in handles))
        activity = {}
        for h, payload in zip(handles, payloads, strict=True):
            seen = None if payload is None else last_seen(payload)
            if seen is not None:
                activity[h] = seen
        return activity

    async def _edit_index(
        self,
        namespace: str,
        user: str,
        edit: Callable[[dict[str, list[Any]]], Awaitable[dict[str, list[Any]] | None]],
    ) -> None:
        """Apply ``edit`` to ``user``'s index by compare-and-swap, re-reading and editing
        again when another writer got in between (``edit`` is safe to repeat). ``edit``
        returns the entries to write, or ``None`` for "nothing to change"."""
        key = _user_index_key(namespace, user)
        async with self._in_line(key):  # in this process, one writer of the index at a time
            for attempt in range(self.index_attempts):
                if attempt:
                    await self._back_off(attempt)  # lost to another process's writer
                raw = await self.get(key)
                edited = await edit(_read_index(raw))
                if edited is None:
                    return
                if raw is None:
                    if not edited or await self.create(key, _write_index(edited), _ttl(edited)):
                        return
                elif await self._swap_index(key, raw, edited):
                    return
        raise StoreContention(
            f"{type(self).__name__}: {self.index_attempts} writes of one user's session index "
            "by other requests each landed between this request's read and write"
        )

    async def _swap_index(self, key: str, raw: bytes, entries: dict[str, list[Any]]) -> bool:
        # An emptied index is not removed (a removal cannot be conditional: it could erase
        # an entry another login just added); it is swapped for an empty one that expires
        # in a second.
        return await self.replace(key, raw, _write_index(entries), _ttl(entries))


# The user index's record: a marker that no session payload starts with (a payload's first
# byte is its format version, 1 or 2), then JSON. A handle that names an index record
# therefore never restores as a session.
_INDEX_MARKER = b"\x00sessionkit-user-index\n"
_HANDLE_SHAPE = re.compile(r"[0-9a-f]{64}")


def _is_handle(value: object) -> bool:
    """True when ``value`` is shaped like a record key (64 lowercase hex): checked before any
    store call, so garbage never reaches a server."""
    return isinstance(value, str) and _HANDLE_SHAPE.fullmatch(value) is not None


def _user_index_key(namespace: str, user: str) -> str:
    """The key of ``user``'s index record under ``namespace``: a hash, never the user id."""
    return hashlib.sha256(f"sessionkit-user-index\x00{namespace}\x00{user}".encode()).hexdigest()


def _read_index(raw: bytes | None) -> dict[str, list[Any]]:
    """The entries of an index record; a record that does not parse counts as empty (it is
    then overwritten by the next write, by compare-and-swap like any other)."""
    if raw is None or not raw.startswith(_INDEX_MARKER):
        return {}
    try:
        entries = json.loads(raw[len(_INDEX_MARKER) :])
    except ValueError:
        return {}
    if not isinstance(entries, dict):
        return {}
    t = _clock.now()
    shape = _HANDLE_SHAPE.fullmatch
    kept = {}
    for h, e in entries.items():
        # JSON gives exactly these types: ``type() is`` keeps bool out of the ints.
        if (
            type(e) is list
            and len(e) == 4
            and type(e[1]) is int
            and e[1] > t
            and type(e[0]) is int
            and (e[2] is None or type(e[2]) is str)
            and (e[3] is None or type(e[3]) is str)
            and shape(h) is not None
        ):
            kept[h] = e
    return kept


def _write_index(entries: dict[str, list[Any]]) -> bytes:
    return _INDEX_MARKER + json.dumps(entries, separators=(",", ":")).encode()


def _ttl(entries: dict[str, list[Any]]) -> int:
    """The index record's lifetime: until its last session can no longer be alive."""
    return max(1, max((e[1] for e in entries.values()), default=0) - _clock.now())


class AbstractTransport(abc.ABC):
    """Where the token travels between client and server, in both directions.

    The session layer asks a transport for the token a request presents, and for the
    response header that hands the client a new token or tells it to drop the old one. A
    transport holds no per-session state: the session's name and cookie attributes arrive
    as ``params`` (a :class:`~aiohttp_sessionkit.cookies.CookieParams`, whose ``name`` is
    the session's name whatever the transport).

    Implementations: :class:`~aiohttp_sessionkit.CookieTransport` (the default) and
    :class:`~aiohttp_sessionkit.HeaderTransport`.
    """

    #: True when the client attaches the token deliberately (a request header), False when
    #: the browser attaches it by itself to every request (a cookie). Explicit transports
    #: are read first when several are configured, and need no CSRF defence.
    explicit: ClassVar[bool] = False
    #: True when an unchanged token is sent again to slide its expiry (a cookie with
    #: ``Max-Age``); False when the client keeps a token until told otherwise.
    resend_unchanged: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def vary(self) -> str:
        """The request header that the token is read from, for the response's ``Vary``."""

    @abc.abstractmethod
    def read(self, request: web.Request, params: CookieParams) -> str | None:
        """The token the request presents, or ``None``.

        ``None`` when absent, empty, ambiguous (presented twice) or not shaped like any
        token (wrong scheme, forbidden characters). Never raises, never logs the token.
        """

    @abc.abstractmethod
    def issue(
        self, request: web.Request, params: CookieParams, token: str, *, max_age: int | None
    ) -> tuple[str, str]:
        """The response header ``(name, value)`` that hands the client ``token``.

        ``max_age`` is the token's lifetime in seconds when one applies (a persistent
        cookie), else ``None``.
        """

    @abc.abstractmethod
    def clear(self, request: web.Request, params: CookieParams) -> tuple[str, str]:
        """The response header ``(name, value)`` that tells the client to drop its token."""

    def clash(self, other: AbstractTransport) -> str | None:
        """Why this transport cannot carry one session while ``other`` carries another
        session of the same application, or ``None`` when they can.

        ``setup()`` asks this of every pair of transports of two sessions and refuses a
        clash. The default: none. A cookie transport is told apart by the session's cookie
        name; a transport whose header does not depend on the session's name overrides this.
        """
        return None


@dataclass(frozen=True, slots=True)
class LegacySession:
    """A session that another library saved, as a legacy reader found it."""

    #: The session's values.
    data: dict[str, Any]
    #: Epoch seconds that library recorded for the session (aiohttp-session: its last write).
    created: int


class AbstractLegacyReader(abc.ABC):
    """Opens sessions written by another session library (``setup(..., legacy=...)``).

    When a presented token does not open in the store, each configured reader is tried in
    order. A hit becomes a new session of ours with the same data (the client gets a new
    token on this response), and once that session is saved the old record is deleted with
    :meth:`delete`. Requests whose token opens in the store never reach a reader.
    """

    #: True when the reader does no network or disk I/O (a cookie format): no time budget.
    local: ClassVar[bool] = False
    #: True when :meth:`delete` makes the token worthless (the old record is gone, so a
    #: replayed copy finds nothing). False (the default, and a cookie format that holds the
    #: session itself): the session layer remembers a hash of each migrated token in the
    #: store (a server-side store, or a JWT store's deny list) until the token could no
    #: longer migrate, so that each token migrates at most once.
    revocable: ClassVar[bool] = False

    async def open(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Prepare connections; called once on application startup. Idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Release what the reader created itself; called on application cleanup."""

    @abc.abstractmethod
    async def load(self, token: str, *, namespace: str) -> LegacySession | None:
        """The session the other library saved under ``token``.

        ``token`` is the raw value the client presented: a cookie value may still be wrapped
        in double quotes (aiohttp quotes cookie values that end in ``=`` padding, and
        browsers send the quotes back), so a reader strips them if its format can have them.

        Returns:
            ``None`` when the token is malformed, unknown, tampered with, sealed with
            another key, or older than the other library's ``max_age``. Never raises for
            a bad token; raises ``StoreUnavailable`` when its server cannot be reached.
        """

    @abc.abstractmethod
    async def delete(self, token: str, *, namespace: str) -> None:
        """Delete the old record behind ``token`` (migration done). Idempotent."""
