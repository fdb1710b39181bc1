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
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

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
    "mirrors",
    "nowait_twin",
]

_Twin = TypeVar("_Twin", bound=Callable[..., Any])

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

    async def _merge(self, key: str, data: bytes, ttl: int, merge: Merge) -> bool:
        """Write ``data`` over ``merge.base``, or this request's changes over whatever another
        save left since (see :class:`Merge`): True once written, False when the record is
        gone (a logout, a login, expiry: nothing is written, nothing comes back)."""
        expected: bytes = merge.base
        for _ in range(self.merge_attempts):
            if await self.replace(key, expected, data, ttl):
                return True
            current = await self.get(key)
            if current is None:
                return False
            rebased = merge.rebase(current)
            if rebased is None:
                return False
            expected, data = current, rebased
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
