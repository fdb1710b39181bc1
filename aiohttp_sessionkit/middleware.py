"""Lazy load, lazy save: the per-request machinery behind get_session()."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from . import observe as events
from .abc import (
    MAX_REMOTE_LENGTH,
    MAX_USER_AGENT_LENGTH,
    MAX_USER_ID_LENGTH,
    AbstractLegacyReader,
    AbstractStore,
    AbstractTransport,
    Merge,
    ServerStore,
    nowait_twin,
)
from .cookies import CookieParams
from .exceptions import SerializationError, SessionResponseError, StoreUnavailable
from .ids import is_valid_session_id, record_key
from .observe import Observer, emit_event
from .serializers import Serializer
from .session import (
    DEFAULT_CLOCK_SKEW_TOLERANCE,
    Session,
    decode_payload,
    encode_payload,
    merge_changes,
    new_lineage,
    now,
)

__all__ = ["SessionConfig"]

log = logging.getLogger("aiohttp_sessionkit")

_T = TypeVar("_T")
#: Seconds a client is told to wait after a 503 caused by an unreachable store.
RETRY_AFTER = 5
#: How many ended client-side sessions one process remembers (about 150 bytes each).
ENDED_LIMIT = 65_536


class EndedLineages:
    """Client-side sessions that a logout, ``regenerate()`` or ``new_session()`` in this
    process ended, so that a slower request of the same session, still running, cannot
    hand its client a fresh token of it (which would undo the logout).

    A client-side store cannot delete the client's token; what this process can do is
    refuse to re-issue it. Entries are keyed by a hash of the cookie name and the session's
    lineage id (never a token) and kept until no token of the session can still be valid
    (its creation plus the absolute timeout), at most ``limit`` of them: when full, expired
    entries go first, then the oldest eighth. Other processes do not see them.
    """

    __slots__ = ("limit", "until")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.until: dict[bytes, int] = {}

    @staticmethod
    def _key(namespace: str, lineage: str) -> bytes:
        return hashlib.blake2b(f"{namespace}\x00{lineage}".encode(), digest_size=16).digest()

    def end(self, namespace: str, lineage: str, until: int) -> None:
        """Remember that the session ``lineage`` ended; forget it at ``until`` (epoch s)."""
        t = now()
        if until <= t:
            return
        entries = self.until
        if len(entries) >= self.limit:
            for key in [key for key, end in entries.items() if end <= t]:
                del entries[key]
            # Still full: drop the oldest eighth at once, so the scan above is not paid on
            # every logout of a saturated process.
            keep = self.limit - max(1, self.limit // 8)
            for key in list(entries)[: max(0, len(entries) - keep)]:
                del entries[key]
        entries[self._key(namespace, lineage)] = until

    def holds(self, namespace: str, lineage: str) -> bool:
        """True when the session ``lineage`` was ended in this process and may not be saved."""
        if not self.until:  # no logout lately: no hash to compute
            return False
        key = self._key(namespace, lineage)
        until = self.until.get(key)
        if until is None:
            return False
        if until <= now():
            del self.until[key]
            return False
        return True


#: The sessions this process ended: shared by every application and store in the process.
ENDED = EndedLineages(ENDED_LIMIT)
#: Tokens whose expiry this process reported (observe.EXPIRED): a client that keeps sending
#: its dead token is reported once, not on every request. Keyed by a hash, never the token.
REPORTED_EXPIRED = EndedLineages(ENDED_LIMIT)


@dataclass(frozen=True, slots=True, eq=False)
class SessionConfig:
    """Everything one ``setup()`` call decided: one session name, one store."""

    store: AbstractStore
    cookie: CookieParams
    idle_timeout: int
    absolute_timeout: int
    touch_interval: int
    store_timeout: float | None
    serializer: Serializer
    #: As configured; the first one answers requests that present no token.
    transports: tuple[AbstractTransport, ...]
    legacy: tuple[AbstractLegacyReader, ...] = ()
    #: Seconds a session's times may lie in the future (another host's clock runs ahead).
    clock_skew_tolerance: int = DEFAULT_CLOCK_SKEW_TOLERANCE
    #: Listeners and telemetry (observe.py); None when nobody listens: no cost at all.
    observer: Observer | None = None
    #: The session key that holds the user's id, or None: sessions are bound to no one.
    user_key: str | None = None
    max_sessions_per_user: int | None = None
    record_client: bool = False
    namespace: str = field(init=False)
    #: The transports in the order tokens are looked for: explicit (header) ones first.
    readers: tuple[AbstractTransport, ...] = field(init=False)
    #: Request headers the response varies on, as one ``Vary`` value and lowercased.
    vary: str = field(init=False)
    vary_lower: tuple[str, ...] = field(init=False)
    #: ``store.load_nowait`` / ``store.save_nowait`` when the session layer may call them in
    #: place of ``load`` / ``save`` (abc.mirrors, abc.nowait_twin): no coroutine.
    load_nowait: Callable[[str, str], Any] | None = field(init=False)
    save_nowait: Callable[[str | None, Any, int, str], str | None] | None = field(init=False)
    #: True when ``store.save`` takes ``established=`` (see AbstractStore.save).
    save_established: bool = field(init=False)
    #: True when updates pass ``merge=`` (see AbstractStore.save): ``store.save`` declares
    #: it and the store can merge (a ServerStore driver without ``replace`` cannot).
    save_merge: bool = field(init=False)
    #: The ``read`` of the only transport, when there is one (the common case): called
    #: directly, without the loop over transports that several need.
    read_only_transport: Callable[[web.Request, CookieParams], str | None] | None = field(
        init=False
    )

    #: ``store.dump`` and ``store.restore``, or the payload functions they call when the
    #: store keeps AbstractStore's (one call less per save and per load).
    dump: Callable[[Session, Serializer, int], Any] = field(init=False)
    restore: Callable[..., Session | None] = field(init=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        store = self.store
        own = getattr(store, "__dict__", {})
        keeps_dump = type(store).dump is AbstractStore.dump and "dump" not in own
        keeps_restore = type(store).restore is AbstractStore.restore and "restore" not in own
        set_(self, "dump", encode_payload if keeps_dump else store.dump)
        set_(self, "restore", decode_payload if keeps_restore else _restore_of(store))
        # Telemetry wraps every store call (call()), so none may bypass it through a twin.
        traced = self.observer is not None and self.observer.telemetry is not None
        set_(self, "load_nowait", None if traced else nowait_twin(store, "load"))
        set_(self, "save_nowait", None if traced else nowait_twin(store, "save"))
        set_(self, "save_established", _takes_keyword(store.save, "established"))
        merges = (
            not store.client_side
            and getattr(store, "merges", True) is True
            and _takes_keyword(store.save, "merge")
        )
        set_(self, "save_merge", merges)
        if (
            merges
            and self.save_nowait is not None
            and not _takes_keyword(self.save_nowait, "merge")
        ):
            set_(self, "save_nowait", None)  # a twin that cannot merge: the coroutine can
        set_(
            self,
            "read_only_transport",
            self.transports[0].read if len(self.transports) == 1 else None,
        )
        set_(self, "namespace", self.cookie.name)
        set_(self, "readers", tuple(sorted(self.transports, key=lambda t: not t.explicit)))
        names = list(dict.fromkeys(t.vary for t in self.readers))
        set_(self, "vary", ", ".join(names))
        set_(self, "vary_lower", tuple(name.lower() for name in names))

    def opened(self, payload: Any, identity: str | None = None) -> Session | None:
        """``payload`` (what the store's ``load`` returned) restored under this
        configuration's timeouts, as a request's load would; ``None`` when it does not
        open. ``identity``: the session id the session reports, if any."""
        return self.restore(
            payload,
            self.serializer,
            identity=identity,
            idle_timeout=self.idle_timeout,
            absolute_timeout=self.absolute_timeout,
            clock_skew_tolerance=self.clock_skew_tolerance,
        )

    def call(self, operation: Awaitable[_T]) -> Awaitable[_T]:
        """Guard a store operation: a time budget, and connectivity failures become 503s.

        A store without I/O (``store.local``) gets its operation back untouched: it cannot
        hang or lose a connection, and the guard would cost more than the operation. With
        telemetry on, every store call of the session layer goes through here, in a span.
        """
        observer = self.observer
        if observer is not None and observer.telemetry is not None:
            return observer.telemetry.call(self, operation)
        if self.store.local:
            return operation
        return self.guarded(operation)

    async def guarded(self, operation: Awaitable[_T]) -> _T:
        try:
            if self.store_timeout is None:
                return await operation
            async with asyncio.timeout(self.store_timeout):
                return await operation
        except StoreUnavailable:
            raise
        except TimeoutError as exc:
            raise StoreUnavailable(
                f"{type(self.store).__name__} did not answer within {self.store_timeout} s "
                "(setup(..., store_timeout=...))"
            ) from exc
        except OSError as exc:
            raise StoreUnavailable(f"{type(self.store).__name__} is unreachable: {exc}") from exc


def _refused_keys(session_class: type[Session], data: dict[str, Any]) -> list[str]:
    """The keys of ``data`` that ``session_class`` refuses (probed one by one, without their
    values, so that nothing of the session reaches the log)."""
    refused = []
    for key in data:
        try:
            session_class(data={key: None}, new=False)
        except ValueError:
            refused.append(key)
    return refused


def _restore_of(store: AbstractStore) -> Callable[..., Session | None]:
    """``store.restore``, taking ``clock_skew_tolerance`` even if the override predates it."""
    restore = store.restore
    try:
        parameters = inspect.signature(restore).parameters.values()
    except (TypeError, ValueError):  # no signature to read: assume the current contract
        return restore
    if any(
        p.name == "clock_skew_tolerance" or p.kind is inspect.Parameter.VAR_KEYWORD
        for p in parameters
    ):
        return restore

    def without_tolerance(*args: Any, clock_skew_tolerance: int, **kwargs: Any) -> Any:
        return restore(*args, **kwargs)  # the override applies its own rule

    return without_tolerance


def _takes_keyword(method: Callable[..., Any], name: str) -> bool:
    """True when ``method`` declares a keyword parameter ``name`` (not just ``**kwargs``:
    a wrapper that forwards them may end at a store that does not take it)."""
    try:
        parameter = inspect.signature(method).parameters.get(name)
    except (TypeError, ValueError):  # no signature to read (a C callable): assume not
        return False
    return parameter is not None and parameter.kind in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )


def user_of(value: object) -> str | None:
    """The user id a session's ``user_key`` value binds it to: a str as it is, an int in
    decimal; anything else (None, absent, another type, too long) binds to no one."""
    if isinstance(value, str):
        return value if len(value) <= MAX_USER_ID_LENGTH else None
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
        return text if len(text) <= MAX_USER_ID_LENGTH else None
    return None


def checked_user(value: object, user_key: str) -> str | None:
    """:func:`user_of` for a session about to be saved: a value that cannot be a user id is
    the application's mistake, reported before anything is written."""
    user = user_of(value)
    if user is None and value is not None:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            raise SerializationError(
                f"session[{user_key!r}] holds a user id longer than {MAX_USER_ID_LENGTH} "
                "characters; bind sessions to a shorter id (the account's primary key); "
                "nothing was saved"
            )
        raise SerializationError(
            f"session[{user_key!r}] holds a {type(value).__name__}; a user id must be a str "
            "or an int (or the key absent for no user); nothing was saved"
        )
    return user


def last_seen_of(
    config: SessionConfig, user: str, opened: dict[int, Session] | None = None
) -> Callable[[Any], int | None]:
    """The judge a store's user index asks about ``user``'s records (abc.LastSeen): a
    payload's last access when it opens as a live session bound to ``user``, else None.
    ``opened``, if given, collects the sessions it opened by ``id(payload)``, so that a
    caller holding the payloads need not restore them again."""
    user_key = config.user_key
    assert user_key is not None

    def last_seen(payload: Any) -> int | None:
        session = config.opened(payload)
        if session is None or user_of(session.get(user_key)) != user:
            return None
        if opened is not None:
            opened[id(payload)] = session
        return session._accessed

    return last_seen


class Registry:
    """The sessions set up on one application (or one ``session_middleware``), by name."""

    __slots__ = ("by_name", "default")

    def __init__(self, config: SessionConfig) -> None:
        self.default = config
        self.by_name = {config.cookie.name: config}

    def get(self, name: str | None) -> SessionConfig:
        if name is None:
            return self.default
        try:
            return self.by_name[name]
        except KeyError:
            raise KeyError(
                f"no session is set up under the cookie name {name!r}; set up: "
                f"{', '.join(sorted(self.by_name))}"
            ) from None


class Action(enum.Enum):
    """What committing one session does at the end of a request (chosen by :meth:`Slot.plan`)."""

    NOTHING = "nothing"  # unchanged, and no refresh due
    REFRESH = "refresh"  # unchanged, but its record's idle expiry is due a push (touch_interval)
    UPDATE = "update"  # changed: rewrite the record the client's token names
    CREATE = "create"  # changed, and no record holds it yet: write one, hand out its token
    DELETE = "delete"  # changed to empty: delete its record, expire the client's token
    LOGIN = "login"  # new_session() or regenerate(): write the new record, then delete the old
    LOGOUT = "logout"  # invalidate(): delete the old record, then write any flash session


# The members as module globals: the middleware compares one on every request, and a global
# is one lookup where ``Action.NOTHING`` is two. (Enum members hash in Python code: hot paths
# compare with ``is``, never ``in`` a set.)
NOTHING, REFRESH, UPDATE, CREATE, DELETE, LOGIN, LOGOUT = Action
#: The actions that write a change the handler made (not a refresh).
CHANGES = frozenset({UPDATE, CREATE, DELETE, LOGIN, LOGOUT})
#: The actions that hand the client a new token, or expire it, even from a server-side store.
NEW_TOKEN = frozenset({CREATE, DELETE, LOGIN, LOGOUT})


class Slot:
    """One session's state during one request."""

    __slots__ = (
        "applied",
        "base",
        "bound",
        "config",
        "header",
        "legacy",
        "lineage",
        "live",
        "seen",
        "session",
        "token",
        "transport",
        "waiters",
    )

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.session: Session | None = None
        self.token: str | None = None  # the token the client holds, as far as we know
        self.live = False  # self.token names a stored record that belongs to self.session
        # The user the loaded record is bound to (setup(..., user_key=...)), else None.
        self.bound: str | None = None
        # A server-side session's payload as loaded, then as last saved by this request: what
        # a merging update compares the record with, and diffs this request's changes from.
        self.base: Any = None
        # The transport the client's token came in (the first configured one if none did):
        # any new token goes back the same way.
        self.transport = config.transports[0]
        self.header: tuple[str, str] | None = None  # a header not yet put on a response
        self.applied = False
        self.waiters: list[asyncio.Future[Session]] | None = None
        # A session read by a legacy reader: its old record goes once ours is saved.
        self.legacy: tuple[AbstractLegacyReader, str] | None = None
        # A client-side session as loaded: its lineage id, and the time it was created.
        self.lineage: tuple[str, int] | None = None
        # The request the application handed to get_session(): a middleware inside ours may
        # have cloned it (request.clone(scheme="https") behind a TLS-terminating proxy), and
        # the cookie's Secure attribute must follow what the handler saw. Kept until apply():
        # the request holds this slot, and a reference past the response would make every
        # request a cycle for the garbage collector (its cost: docs/performance.md).
        self.seen: web.Request | None = None

    def see(self, request: web.Request) -> None:
        """Remember ``request`` as the one the handler saw, unless one already seen is
        HTTPS and this one is not (a scheme rewrite is a trust decision: keep it)."""
        seen = self.seen
        if seen is None or (request is not seen and request.secure and not seen.secure):
            self.seen = request

    def issuing(self, request: web.Request) -> web.Request:
        """The request whose scheme decides ``Secure``: ``request`` (the middleware's) if it
        is HTTPS, else the one the handler saw."""
        seen = self.seen
        return request if seen is None or seen is request or request.secure else seen

    def presented(self, request: web.Request) -> str | None:
        """The token the request presents, remembering the transport it came in."""
        config = self.config
        for transport in config.readers:
            token = transport.read(request, config.cookie)
            if token:
                self.transport = transport
                return token
        return None

    async def load(self, request: web.Request) -> Session:
        seen = self.seen
        if seen is None:  # the first get_session(): the scheme is read only if a write needs it
            self.seen = request
        elif request is not seen:
            self.see(request)
        if self.session is not None:  # loaded by an earlier get_session() of this request
            return self.session
        if self.waiters is not None:  # another task of this request is loading it now
            waiter: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            return await waiter
        self.waiters = []
        # One coroutine for the whole load: it runs on every request that reads its session.
        config = self.config
        session = None
        try:
            read = config.read_only_transport
            token = self.presented(request) if read is None else read(request, config.cookie)
            if token:
                self.token = token
                store = config.store
                load_nowait = config.load_nowait
                if load_nowait is not None:
                    payload = load_nowait(token, config.namespace)
                else:
                    operation = store.load(token, namespace=config.namespace)
                    if config.observer is not None:  # telemetry wraps even a local store
                        payload = await config.call(operation)
                    else:
                        payload = await (operation if store.local else config.guarded(operation))
                if payload is not None:
                    session = config.restore(
                        payload,
                        config.serializer,
                        identity=None if store.client_side else token,
                        idle_timeout=config.idle_timeout,
                        absolute_timeout=config.absolute_timeout,
                        clock_skew_tolerance=config.clock_skew_tolerance,
                    )
                if session is not None:
                    self.live = True
                    if config.user_key is not None:
                        self.bound = user_of(session.get(config.user_key))
                    if store.client_side:
                        lineage = getattr(session, "_lineage", None)
                        if lineage is not None:
                            self.lineage = (lineage, session._created)
                    else:
                        self.base = payload
                elif config.legacy:
                    session = await self._load_legacy(token)
                if session is None:
                    log.debug("session %r did not open; starting a new session", config.namespace)
                    if config.observer is not None:
                        self._found_expired(token, payload)
            if session is None:
                session = config.store.session_class()
        except BaseException as exc:
            for waiter in self.waiters:
                if isinstance(exc, asyncio.CancelledError):
                    waiter.cancel()
                else:
                    waiter.set_exception(exc)
            self.waiters = None
            raise
        self.session = session
        if self.waiters:
            for waiter in self.waiters:
                waiter.set_result(session)
        self.waiters = None
        return session

    def _found_expired(self, token: str, payload: Any) -> None:
        """Report the session ``token`` names as expired, once per process: its record is
        gone (a server store's native expiry, or ended earlier) or past its timeouts.

        A token that could never have named a session is no expiry: a server store's token
        not shaped like our ids, or a client-side token that does not decrypt (forged, or
        sealed with a retired key).
        """
        config = self.config
        store = config.store
        if store.client_side:
            if payload is None:
                return
        elif isinstance(store, ServerStore) and not is_valid_session_id(token):
            return
        if REPORTED_EXPIRED.holds(config.namespace, token):
            return  # the client kept its dead token: the expiry was told already
        REPORTED_EXPIRED.end(config.namespace, token, now() + config.absolute_timeout)
        handle = None if store.client_side else record_key(config.namespace, token)
        emit_event(config.observer, events.ENDED, handle=handle, reason=events.EXPIRED)

    def _emit(self, kind: str, token: str | None, reason: str | None = None) -> None:
        """Report an event of this slot's session, named by ``token``'s record key (server
        side) or the session's lineage (client side). Only called with an observer."""
        config = self.config
        if config.store.client_side:
            session = self.session
            handle = None if session is None else session._lineage
        else:
            handle = None if token is None else record_key(config.namespace, token)
        emit_event(config.observer, kind, handle=handle, reason=reason, user_id=self._user())

    def _emit_logout(self, handle: str | None) -> None:
        """Report the end of the session the client's token named (its ``handle``)."""
        emit_event(
            self.config.observer,
            events.ENDED,
            handle=handle,
            reason=events.LOGOUT,
            user_id=self._user(),
        )

    def _user(self) -> str | None:
        """For events: the user this slot's session was bound to when the request began,
        else the one it is bound to now (setup(..., user_key=...)); None without user_key."""
        config = self.config
        if config.user_key is None:
            return None
        if self.bound is not None:
            return self.bound
        session = self.session
        return None if session is None else user_of(session.get(config.user_key))

    async def _load_legacy(self, token: str) -> Session | None:
        """A session another library wrote under ``token``, moved over as a new one of ours."""
        # Here, not at the top: legacy.py (and Fernet) load only when readers are configured.
        from .legacy import claim_migration, migration_ledger

        config = self.config
        for reader in config.legacy:
            operation = reader.load(token, namespace=config.namespace)
            found = await (operation if reader.local else config.guarded(operation))
            if found is None:
                continue
            t = now()
            # Our timeouts count from the old write (its last activity), as does the old
            # library's max_age; past any of them the token can never migrate.
            limit = min(config.idle_timeout, config.absolute_timeout)
            max_age = getattr(reader, "max_age", None)
            if isinstance(max_age, int) and max_age > 0:
                limit = min(limit, max_age)
            if t - found.created > limit:
                # Moving it over would save it only to expire it at once.
                return None
            data = dict(found.data)
            try:
                session = config.store.session_class(
                    data=data, new=False, created=found.created, accessed=found.created
                )
            except ValueError:
                # Keys this store's sessions refuse (a JWT store's reserved claims, say): an
                # answer of 500 on every request would lock the user out; start afresh.
                log.warning(
                    "a legacy %r session was not migrated: %s refuses its keys %s "
                    "(rename them in the old application first); starting a new session",
                    config.namespace,
                    type(config.store).__name__,
                    ", ".join(repr(k) for k in _refused_keys(config.store.session_class, data)),
                )
                return None
            if not reader.revocable:
                ledger = migration_ledger(config.store)
                if ledger is not None:
                    claim = claim_migration(
                        ledger, token, namespace=config.namespace, ttl=found.created + limit - t + 1
                    )
                    if not await (claim if ledger.local else config.guarded(claim)):
                        log.info(
                            "a legacy %r token was presented again after its migration; "
                            "starting a new session",
                            config.namespace,
                        )
                        return None
            session._dirty = True  # saved under a new token of ours on the way out
            session._established = True  # it may be a logged-in user's: never evict it
            self.legacy = (reader, token)
            return session
        return None

    def replace(self, session: Session) -> None:
        """Install ``session`` in place of the current one; the old record gets deleted."""
        session._discard_old = True
        self.session = session

    def plan(self) -> Action:
        """What a commit does now: the save rules, written once for :meth:`commit`, its
        synchronous twin :meth:`commit_now` and a response already prepared (``_finish``).

        ==============================================================  ===========
        the session in this request                                     action
        ==============================================================  ===========
        never loaded                                                    ``NOTHING``
        ``new_session()`` or ``regenerate()`` (a login)                 ``LOGIN``
        ``invalidate()`` (a logout)                                     ``LOGOUT``
        changed, and now empty                                          ``DELETE``
        changed, and its token names a live record                      ``UPDATE``
        changed, and no live record (new, or its token did not open)    ``CREATE``
        unchanged, live, not empty, last saved ``touch_interval`` ago   ``REFRESH``
        anything else (a read)                                          ``NOTHING``
        ==============================================================  ===========

        One more rule applies when an action other than a move is carried out: a client-side
        session that another request in this process ended (:meth:`_ended`) is not written
        at all (:meth:`_lost`). It is checked there, not here, so that what a prepared
        response may still do does not depend on a race.
        """
        session = self.session
        if session is None:
            return NOTHING
        if session._discard_old:
            return LOGIN if session._established else LOGOUT
        if session._dirty:
            if not (session._data or session._flashes):  # session.empty, one call less
                return DELETE
            return UPDATE if self.live else CREATE
        if (
            self.live
            and (session._data or session._flashes)
            and now() - session._accessed >= self.config.touch_interval
        ):
            return REFRESH
        return NOTHING

    def pending(self) -> bool:
        """True if the session has changes that a commit would write (not just a refresh)."""
        return self.plan() in CHANGES

    def needs_cookie(self) -> bool:
        """True if committing the pending changes needs a new token header to reach the
        client (always, for a client-side store: its token is the data)."""
        return self.config.store.client_side or self.plan() in NEW_TOKEN

    async def commit(self, request: web.Request) -> None:
        """Carry out :meth:`plan`, once; leave the token header to send in ``self.header``."""
        action = self.plan()
        if action is NOTHING:
            return
        if action is not REFRESH and self.config.user_key is not None:
            await self._commit_bound(request, action)
            return
        await self._commit(request, action)

    async def _commit(self, request: web.Request, action: Action) -> None:
        """Carry out ``action`` (not NOTHING): the store writes, without the user index."""
        session = self.session
        assert session is not None  # plan() says NOTHING without one
        if action is LOGIN or action is LOGOUT:
            await self._move(request, session)
            return
        if self.lineage is not None and self._ended():
            self._lost(session)
            return
        config = self.config
        if action is DELETE:
            session._dirty = False
            if self.token is not None:
                if self.live:
                    await config.call(config.store.delete(self.token, namespace=config.namespace))
                    self.live = False
                    if config.observer is not None:
                        self._emit(events.ENDED, self.token, events.LOGOUT)
                self._expire_cookie(request)
            return
        # CREATE, UPDATE or REFRESH
        payload, t, ttl = self._payload(session)
        merge = self._merge_of(action)
        if merge is None:
            operation = self._store_save(
                None if action is CREATE else self.token, payload, ttl, session
            )
        else:
            save: Callable[..., Awaitable[str | None]] = config.store.save  # takes the keyword
            operation = save(self.token, payload, ttl=ttl, namespace=config.namespace, merge=merge)
        saved = await config.call(operation)
        self._after_save(request, session, action, saved, payload, t, ttl)
        if self.legacy is not None:
            await self._drop_legacy()

    def commit_now(self, request: web.Request, action: Action) -> bool:
        """:meth:`commit` of ``action`` (this slot's :meth:`plan`) without a coroutine, when
        it is one plain save to a store with a synchronous ``save_nowait``: an update or
        refresh, or a client-side store's new token. False, doing nothing, for anything else.

        A server-side store's new session is left to :meth:`commit`: it goes through the
        store's create loop (``ServerStore.save``), which a subclass may have customised.
        """
        config = self.config
        save_nowait = config.save_nowait
        if (
            save_nowait is None
            or self.legacy is not None  # its old record is deleted with a coroutine
            or not (
                action is UPDATE
                or action is REFRESH
                or (action is CREATE and config.store.client_side)
            )
        ):
            return False
        session = self.session
        assert session is not None  # plan() says NOTHING without one
        user_key = config.user_key
        if user_key is not None and (
            action is CREATE or user_of(session.get(user_key)) != self.bound
        ):
            return False  # the binding changes: the index is written by a coroutine
        if self.lineage is not None and self._ended():
            self._lost(session)
            return True
        payload, t, ttl = self._payload(session)
        merge = self._merge_of(action)
        if merge is None:
            saved = save_nowait(
                None if action is CREATE else self.token, payload, ttl, config.namespace
            )
        else:  # the twin takes merge (SessionConfig checked), positionally like its others
            merging: Callable[..., str | None] = save_nowait
            saved = merging(self.token, payload, ttl, config.namespace, merge)
        self._after_save(request, session, action, saved, payload, t, ttl)
        return True

    def _merge_of(self, action: Action) -> Merge | None:
        """What lets the save of ``action`` merge with a concurrent save: for an update or a
        refresh of a record this request loaded, on a store that merges; else None."""
        if action is CREATE or self.base is None or not self.config.save_merge:
            return None
        return Merge(self.base, self._rebase)

    def _after_save(
        self,
        request: web.Request,
        session: Session,
        action: Action,
        saved: str | None,
        payload: Any,
        t: int,
        ttl: int,
    ) -> None:
        """Record a save's outcome (:meth:`_saved`), report a created session, and keep
        what was written as the base a later save of this request merges from."""
        config = self.config
        self._saved(request, session, saved, t, ttl)
        if action is CREATE and self.live and config.observer is not None:
            self._emit(events.CREATED, self.token)
        if saved is not None and config.save_merge:
            self._based(session, payload)

    async def _commit_bound(self, request: web.Request, action: Action) -> None:
        """:meth:`_commit`, keeping the user index in step: a session whose user (or record)
        changes is unbound from the old and bound to the new; one that keeps both costs
        nothing more.

        An update binds before it writes, so that a record saved with a user is never left
        out of the index (a failed write leaves an entry whose record is not the user's,
        which the index ignores and drops). A new record is bound after its write: if the
        binding fails (a 503), its token is never handed out.
        """
        config = self.config
        store = config.store
        user_key = config.user_key
        assert user_key is not None
        session = self.session
        assert session is not None
        user = checked_user(session.get(user_key), user_key)
        if (action is LOGIN or action is LOGOUT) and not self.live and self.token is not None:
            # new_session() without a load: learn whose session is about to end.
            await self._learn_bound(self.token)
        old_user = self.bound
        old_handle = None
        if old_user is not None and self.token is not None:
            old_handle = store.handle(self.token, namespace=config.namespace)
        if action is UPDATE and user is not None and user != old_user:
            assert self.token is not None
            await self._bind(request, session, user, self.token)
            bound_early = True
        else:
            bound_early = False
        await self._commit(request, action)
        live = self.live and self.token is not None
        now_user = user if live else None
        now_handle = None
        if live:
            assert self.token is not None
            now_handle = store.handle(self.token, namespace=config.namespace)
        if (
            old_user is not None
            and old_handle is not None
            and (old_user != now_user or old_handle != now_handle)
        ):
            await config.call(store.unbind_user(old_handle, old_user, namespace=config.namespace))
        if (
            now_user is not None
            and not bound_early
            and (now_user != old_user or now_handle != old_handle)
        ):
            assert self.token is not None
            await self._bind(request, session, now_user, self.token)
        self.bound = now_user

    async def _bind(self, request: web.Request, session: Session, user: str, token: str) -> None:
        config = self.config
        user_agent = remote = None
        if config.record_client:
            agent = request.headers.get(hdrs.USER_AGENT)
            user_agent = agent[:MAX_USER_AGENT_LENGTH] if agent else None
            remote = request.remote[:MAX_REMOTE_LENGTH] if request.remote else None
        evicted = await config.call(
            config.store.bind_user(
                token,
                user,
                namespace=config.namespace,
                created=session._created,
                until=session._created + config.absolute_timeout,
                last_seen=last_seen_of(config, user),
                limit=config.max_sessions_per_user,
                user_agent=user_agent,
                remote=remote,
            )
        )
        if evicted and config.observer is not None:
            # One event for the sessions max_sessions_per_user ended (the store counts them).
            emit_event(
                config.observer,
                events.ENDED,
                handle=None,
                reason=events.EVICTED,
                user_id=user,
                count=evicted,
            )

    async def _learn_bound(self, token: str) -> None:
        """Set ``self.bound`` from the record ``token`` names, if it opens."""
        config = self.config
        assert config.user_key is not None
        payload = await config.call(config.store.load(token, namespace=config.namespace))
        previous = None if payload is None else config.opened(payload)
        if previous is not None:
            self.bound = user_of(previous.get(config.user_key))

    def _based(self, session: Session, payload: Any) -> None:
        """After a save of ``payload``: a later save in this request (a response prepared
        before the handler's last change) merges from this request's view as saved. If the
        store merged another request's save in, the record differs from ``payload``: that
        save's compare fails and merges again, so the other request's keys stay."""
        self.base = payload
        session._shown = False

    def _rebase(self, current: Any) -> Any | None:
        """``Merge.rebase``: this request's changes since :attr:`base` applied to ``current``,
        another request's save, as the payload to write; ``None`` when ``current`` does not
        open (the session ended or expired meanwhile: nothing is written)."""
        config = self.config
        session = self.session
        assert session is not None  # only a loaded session's save merges

        merged = config.opened(current, self.token)
        if merged is None:
            return None
        merge_changes(session, config.opened(self.base, self.token), merged, config.serializer)
        return config.dump(merged, config.serializer, now())

    async def _write_new(self, session: Session) -> tuple[str | None, int, int]:
        """Write ``session`` as a new record: its token, access time and lifetime."""
        payload, t, ttl = self._payload(session)
        token = await self.config.call(self._store_save(None, payload, ttl, session))
        return token, t, ttl

    async def _end_old(self) -> None:
        """Delete the record the client's token names, and remember its lineage as ended."""
        config = self.config
        store = config.store
        old = self.token
        if old is None:
            return
        if store.client_side and self.lineage is None and not self.live:
            # new_session() without a load: open the old token to learn what to end.
            await self._learn_lineage(old)
        await config.call(store.delete(old, namespace=config.namespace))
        if self.lineage is not None:
            lineage, created = self.lineage
            ENDED.end(config.namespace, lineage, created + config.absolute_timeout)
            self.lineage = None

    def _store_save(
        self, token: str | None, payload: Any, ttl: int, session: Session
    ) -> Awaitable[str | None]:
        """The store's save of ``payload`` under ``token`` (None: a new record). A new record
        of an established session (a login) says so to a store that takes ``established``
        (MemoryStore never evicts it for a visitor's session)."""
        config = self.config
        if token is None and session._established and config.save_established:
            save: Callable[..., Awaitable[str | None]] = config.store.save  # takes the keyword
            return save(None, payload, ttl=ttl, namespace=config.namespace, established=True)
        return config.store.save(token, payload, ttl=ttl, namespace=config.namespace)

    async def _move(self, request: web.Request, session: Session) -> None:
        """Commit ``new_session()``, ``regenerate()`` or ``invalidate()``: the session moves to
        a new record (or to none, when empty) and the old record is deleted.

        A login (``new_session()``, ``regenerate()``) writes the new record first: if that
        fails (a 503), the old one is untouched and the client's cookie still opens it; if the
        deletion then fails, the new record is never handed out and expires unused. A logout
        (``invalidate()``) deletes first: it is final even when its "signed out" flash
        session cannot be written (a 503 then, and a cookie that opens nothing).
        """
        token = None
        t = ttl = 0
        observer = self.config.observer
        ended = None
        if observer is not None and self.live:  # the old session's name, before it goes
            ended = self._handle_of_old()
        if session._established:
            if not session.empty:
                token, t, ttl = await self._write_new(session)
            await self._end_old()
        else:
            await self._end_old()
            if ended is not None:
                self._emit_logout(ended[0])
            if not session.empty:
                token, t, ttl = await self._write_new(session)
        if self.legacy is not None:
            await self._drop_legacy()
        session._discard_old = False
        self.live = False
        self.base = None  # a new record only this request knows of: nothing to merge with
        if token is None:
            session._dirty = False
            self._expire_cookie(request)
            if session._established and ended is not None:  # new_session(), left empty
                self._emit_logout(ended[0])
        else:
            self._saved(request, session, token, t, ttl)
            if observer is not None and self.live:
                regenerated = session._established and ended is not None
                self._emit(events.REGENERATED if regenerated else events.CREATED, token)

    def _handle_of_old(self) -> tuple[str | None]:
        """The handle of the session the client's token opened (see :meth:`_emit`)."""
        config = self.config
        if config.store.client_side:
            return (None if self.lineage is None else self.lineage[0],)
        return (None if self.token is None else record_key(config.namespace, self.token),)

    def _payload(self, session: Session) -> tuple[Any, int, int]:
        """What a save of ``session`` now writes: the payload, the time it records as the
        last access, and the record's lifetime (idle timeout or the session's ``max_age``,
        never past the absolute timeout). A client-side session gets its lineage id here,
        on its first save."""
        config = self.config
        if session._lineage is None and config.store.client_side:
            session._lineage = new_lineage()
        t = now()
        payload = config.dump(session, config.serializer, t)
        idle = config.idle_timeout if session._max_age is None else session._max_age
        return payload, t, max(1, min(idle, session._created + config.absolute_timeout - t))

    def _saved(
        self, request: web.Request, session: Session, token: str | None, t: int, ttl: int
    ) -> None:
        """Record the outcome of a save: the new token, and the header that hands it out."""
        config = self.config
        session._dirty = False
        session._accessed = t
        if token is None:
            self._lost(session)
            return
        if not config.store.client_side:
            session._identity = token
        max_age = config.cookie.max_age if session._max_age is None else session._max_age
        transport = self.transport
        if token != self.token or (max_age is not None and transport.resend_unchanged):
            self.header = transport.issue(
                self.issuing(request),
                config.cookie,
                token,
                max_age=None if max_age is None else min(max_age, ttl),
            )
            self.applied = False
        self.token = token
        self.live = True

    async def _learn_lineage(self, token: str) -> None:
        """Set ``self.lineage`` from the client-side session ``token`` holds, if it opens."""
        config = self.config
        payload = await config.call(config.store.load(token, namespace=config.namespace))
        if payload is None:
            return
        previous = config.opened(payload)
        lineage = getattr(previous, "_lineage", None)
        if previous is not None and lineage is not None:
            self.lineage = (lineage, previous._created)

    def _ended(self) -> bool:
        """True when another request in this process ended the client-side session loaded
        here (a logout or a login); ``self.lineage`` is set."""
        assert self.lineage is not None
        return ENDED.holds(self.config.namespace, self.lineage[0])

    def _lost(self, session: Session) -> None:
        """The session was ended by another request while this one ran: save nothing, and
        send no token header at all.

        The record is gone (a logout, a login's ``regenerate()``, or expiry): an update never
        resurrects it. Nor does the client's token get expired: by now the client may hold
        a newer one from that other request (the login's session, the logout's flash), and a
        deletion would wipe it. A dead token left in the client opens nothing, and ids are
        never adopted.
        """
        log.debug("session %r was ended during the request; not saved", self.config.namespace)
        session._dirty = False
        session._identity = None
        self.live = False

    async def _drop_legacy(self) -> None:
        """Delete the record a legacy reader opened: the session moved over, or logged out."""
        assert self.legacy is not None
        reader, old = self.legacy
        self.legacy = None
        operation = reader.delete(old, namespace=self.config.namespace)
        await (operation if reader.local else self.config.guarded(operation))

    def _expire_cookie(self, request: web.Request) -> None:
        """Tell the client to drop its token (expire the cookie, empty the header)."""
        if self.token is None:
            return
        self.header = self.transport.clear(self.issuing(request), self.config.cookie)
        self.applied = False
        self.token = None

    def apply(self, response: web.StreamResponse) -> None:
        """Put the pending token header (if any) and ``Vary`` on ``response``.

        A response that hands out or clears a token is private to this client: unless the
        handler chose a ``Cache-Control`` itself, it gets ``Cache-Control: private`` so no
        shared cache or CDN gives one user's session to the next.
        """
        if self.applied:
            return
        self.applied = True
        self.seen = None  # see __init__: no request -> slot -> request cycle past here
        headers = response.headers
        if self.header is not None:
            name, value = self.header
            headers.add(name, value)
            self.header = None
            if hdrs.CACHE_CONTROL not in headers:
                headers[hdrs.CACHE_CONTROL] = "private"
        config = self.config
        # One lookup: our value goes in unless the handler set a Vary of its own (getting
        # our very value back means it lists every name we need).
        vary = headers.setdefault(hdrs.VARY, config.vary)
        if vary is not config.vary:
            # Whole field names, case-insensitively (RFC 9110 section 12.5.5): a handler's
            # "X-Cookie-Consent" or "Proxy-Authorization" must not hide our "Cookie" or
            # "Authorization" from a shared cache. Vary may come in several header lines.
            listed = [
                name.strip() for line in headers.getall(hdrs.VARY) for name in line.split(",")
            ]
            lowered = {name.lower() for name in listed}
            if "*" not in lowered:  # "*" already varies on everything
                missing = [
                    n
                    for n, low in zip(config.vary.split(", "), config.vary_lower, strict=True)
                    if low not in lowered
                ]
                if missing:
                    headers[hdrs.VARY] = ", ".join([*filter(None, listed), *missing])


class RequestState:
    """What the middleware keeps on each request: the sessions set up, those in use."""

    __slots__ = ("finished", "registry", "slots")

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.slots: dict[str, Slot] | None = None  # created by the first get_session()
        self.finished = False  # the middleware saved and set the cookie before prepare


# One key, always set by the middleware: a lookup of a missing key costs a caught KeyError,
# which a request that never touches its session should not pay twice.
STATE_KEY = web.RequestKey("aiohttp_sessionkit.state", RequestState)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _unavailable(exc: StoreUnavailable) -> web.Response:
    log.warning("session store unavailable, answering 503: %s", exc)
    return web.Response(
        status=503,
        text="503: Service Unavailable (the session store cannot be reached)",
        headers={hdrs.RETRY_AFTER: str(RETRY_AFTER)},
    )


def make_middleware(registry: Registry) -> Middleware:
    """The middleware that commits sessions on the way out."""

    @web.middleware
    async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        state = RequestState(registry)
        request[STATE_KEY] = state
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if state.slots is not None:
                try:
                    await _finish(request, state.slots, exc, exc.prepared, exc.status)
                except StoreUnavailable as unavailable:
                    return _unavailable(unavailable)
                state.finished = True
            raise
        except StoreUnavailable as exc:
            return _unavailable(exc)
        slots = state.slots
        if slots is not None:
            # Read once: nothing below prepares the response.
            prepared = response.prepared
            status = response.status
            if not prepared and status < 500:
                for slot in slots.values():
                    action = slot.plan()
                    if action is not NOTHING and not slot.commit_now(request, action):
                        break  # a write that needs the store's coroutine: _finish below
                else:  # nothing left to write (a read, a write to a local store): no coroutine
                    for slot in slots.values():
                        slot.apply(response)
                    state.finished = True
                    return response
            try:
                await _finish(request, slots, response, prepared, status)
            except StoreUnavailable as exc:
                if prepared:
                    raise
                return _unavailable(exc)
            state.finished = not prepared
        return response

    return session_middleware


async def _finish(
    request: web.Request,
    state: dict[str, Slot],
    response: web.StreamResponse,
    prepared: bool,
    status: int,
) -> None:
    """Commit every session of the request; ``prepared`` and ``status`` are the response's."""
    if status >= 500:  # a failed request saves nothing
        if not prepared:
            for slot in state.values():
                slot.apply(response)
        return
    for slot in state.values():
        if not prepared:
            await slot.commit(request)
            slot.apply(response)
        elif slot.pending():
            if slot.needs_cookie():
                raise SessionResponseError(
                    f"the session {slot.config.namespace!r} changed after the response was "
                    "prepared, and the change needs a new cookie that can no longer be sent; "
                    "make the change before calling prepare() (or before the first write)"
                )
            await slot.commit(request)


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Commit sessions of responses prepared inside the handler (streams, websockets)."""
    try:
        state = request[STATE_KEY]
    except KeyError:  # not a request our middleware saw (the session_middleware is elsewhere)
        return
    if state.slots is None or state.finished:
        return
    for slot in state.slots.values():
        if response.status < 500:
            await slot.commit(request)
        slot.apply(response)
