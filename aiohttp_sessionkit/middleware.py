"""Lazy load, lazy save: the per-request machinery behind get_session()."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from .abc import AbstractLegacyReader, AbstractStore, AbstractTransport
from .cookies import CookieParams
from .exceptions import SessionResponseError, StoreUnavailable
from .serializers import Serializer
from .session import Session, decode_payload, encode_payload, now

__all__ = ["SessionConfig"]

log = logging.getLogger("aiohttp_sessionkit")

_T = TypeVar("_T")
#: Seconds a client is told to wait after a 503 caused by an unreachable store.
RETRY_AFTER = 5


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
    namespace: str = field(init=False)
    #: The transports in the order tokens are looked for: explicit (header) ones first.
    readers: tuple[AbstractTransport, ...] = field(init=False)
    #: Request headers the response varies on, as one ``Vary`` value and lowercased.
    vary: str = field(init=False)
    vary_lower: tuple[str, ...] = field(init=False)
    #: ``store.load_nowait`` / ``store.save_nowait`` when the store offers them (the optional
    #: hook described in abc.AbstractStore): ``load`` and ``save`` without a coroutine.
    load_nowait: Callable[[str, str], Any] | None = field(init=False)
    save_nowait: Callable[[str | None, Any, int, str], str | None] | None = field(init=False)
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
        set_(self, "restore", decode_payload if keeps_restore else store.restore)
        set_(self, "load_nowait", _nowait_twin(self.store, "load"))
        set_(self, "save_nowait", _nowait_twin(self.store, "save"))
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

    def call(self, operation: Awaitable[_T]) -> Awaitable[_T]:
        """Guard a store operation: a time budget, and connectivity failures become 503s.

        A store without I/O (``store.local``) gets its operation back untouched: it cannot
        hang or lose a connection, and the guard would cost more than the operation.
        """
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


def _nowait_twin(store: AbstractStore, method: str) -> Any:
    """``store.load_nowait`` / ``store.save_nowait`` if the session layer may call it instead
    of ``load`` / ``save``: the store is ``local`` and the class whose ``load`` / ``save``
    runs defines the twin too (see AbstractStore).

    A subclass that overrides ``load`` (a wrapper that counts calls, say) without its own
    ``load_nowait`` gets no fast path, so its ``load`` is never bypassed.
    """
    twin = f"{method}_nowait"
    for klass in type(store).__mro__:
        attrs = vars(klass)
        if method in attrs:
            return getattr(store, twin) if twin in attrs and store.local else None
    return None


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


class Slot:
    """One session's state during one request."""

    __slots__ = (
        "applied",
        "config",
        "header",
        "legacy",
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
        # The transport the client's token came in (the first configured one if none did):
        # any new token goes back the same way.
        self.transport = config.transports[0]
        self.header: tuple[str, str] | None = None  # a header not yet put on a response
        self.applied = False
        self.waiters: list[asyncio.Future[Session]] | None = None
        # A session read by a legacy reader: its old record goes once ours is saved.
        self.legacy: tuple[AbstractLegacyReader, str] | None = None
        # The request the application handed to get_session(): a middleware inside ours may
        # have cloned it (request.clone(scheme="https") behind a TLS-terminating proxy), and
        # the cookie's Secure attribute must follow what the handler saw. Kept until apply():
        # the request holds this slot, and a reference past the response would make every
        # request a cycle for the garbage collector (measured: +4% instructions per request).
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
                    payload = await (operation if store.local else config.guarded(operation))
                if payload is not None:
                    session = config.restore(
                        payload,
                        config.serializer,
                        identity=None if store.client_side else token,
                        idle_timeout=config.idle_timeout,
                        absolute_timeout=config.absolute_timeout,
                    )
                if session is not None:
                    self.live = True
                elif config.legacy:
                    session = await self._load_legacy(token)
                if session is None:
                    log.debug("session %r did not open; starting a new session", config.namespace)
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

    async def _load_legacy(self, token: str) -> Session | None:
        """A session another library wrote under ``token``, moved over as a new one of ours."""
        config = self.config
        for reader in config.legacy:
            operation = reader.load(token, namespace=config.namespace)
            found = await (operation if reader.local else config.guarded(operation))
            if found is None:
                continue
            age = now() - found.created
            if age > config.idle_timeout or age > config.absolute_timeout:
                # Expired under our timeouts too (the old write is its last activity):
                # moving it over would save it only to expire it at once.
                return None
            session = config.store.session_class(
                data=dict(found.data), new=False, created=found.created, accessed=found.created
            )
            session._dirty = True  # saved under a new token of ours on the way out
            self.legacy = (reader, token)
            return session
        return None

    def replace(self, session: Session) -> None:
        """Install ``session`` in place of the current one; the old record gets deleted."""
        session._discard_old = True
        self.session = session

    def pending(self) -> bool:
        """True if the session has changes that a commit would write."""
        session = self.session
        return session is not None and (session._dirty or session._discard_old)

    def due(self) -> bool:
        """True if :meth:`commit` has something to do: a change, or a throttled refresh."""
        session = self.session
        if session is None:
            return False
        if session._dirty or session._discard_old:
            return True
        return (
            self.live
            and bool(session._data or session._flashes)  # not session.empty, one call less
            and (now() - session._accessed >= self.config.touch_interval)
        )

    def needs_cookie(self) -> bool:
        """True if committing the pending changes needs a new Set-Cookie to reach the client."""
        session = self.session
        return session is not None and (
            self.config.store.client_side or session._discard_old or not self.live or session.empty
        )

    async def commit(self, request: web.Request) -> None:
        """Write what changed, once; leave the cookie to send in ``self.header``."""
        session = self.session
        if session is None or not self.due():
            return
        config = self.config
        store = config.store
        namespace = config.namespace
        if session._discard_old:
            if self.legacy is not None:
                await self._drop_legacy()
            if self.token is not None:
                await config.call(store.delete(self.token, namespace=namespace))
                self.live = False
                if session.empty and not session._dirty:
                    session._discard_old = False
                    self._expire_cookie(request)
                    return
            session._discard_old = False
            session._dirty = True
        if session.empty:
            if session._dirty:
                session._dirty = False
                if self.live and self.token is not None:
                    await config.call(store.delete(self.token, namespace=namespace))
                    self.live = False
                if self.token is not None:
                    self._expire_cookie(request)
            return
        # due(): the session changed, or it is live and its refresh is due
        payload, t, ttl = self._payload(session)
        operation = store.save(
            self.token if self.live else None, payload, ttl=ttl, namespace=namespace
        )
        token = await (operation if store.local else config.guarded(operation))  # call(), inlined
        self._saved(request, session, token, t, ttl)
        if self.legacy is not None:
            await self._drop_legacy()

    def commit_now(self, request: web.Request) -> bool:
        """:meth:`commit` without a coroutine, for a due change that is one plain save to a
        built-in local store (the common write); False, doing nothing, for anything else.

        A server-side store's new session is left to :meth:`commit`: it goes through the
        store's create loop (``ServerStore.save``), which a subclass may have customised.
        """
        config = self.config
        save_nowait = config.save_nowait
        session = self.session
        if (
            save_nowait is None
            or session is None
            or session._discard_old
            or self.legacy is not None
            or not (session._data or session._flashes)  # session.empty: a deletion
            or not (self.live or config.store.client_side)
        ):
            return False
        # _payload(), inlined on purpose: this is the write of every request to a local
        # store, and the call measured 0.6% of a memory-store write under Valgrind, enough
        # to put it under its target (0.90 x the adjusted memory limit).
        t = now()
        payload = config.dump(session, config.serializer, t)
        idle = config.idle_timeout if session._max_age is None else session._max_age
        ttl = max(1, min(idle, session._created + config.absolute_timeout - t))
        token = save_nowait(self.token if self.live else None, payload, ttl, config.namespace)
        self._saved(request, session, token, t, ttl)
        return True

    def _payload(self, session: Session) -> tuple[Any, int, int]:
        """What a save of ``session`` now writes: the payload, the time it records as the
        last access, and the record's lifetime (idle timeout or the session's ``max_age``,
        never past the absolute timeout)."""
        config = self.config
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
            # The record went away while this request ran (a logout, or expiry): never
            # resurrect it. The client's cookie now points at nothing, so expire it.
            log.debug("session %r was deleted during the request; not saved", config.namespace)
            self.live = False
            session._identity = None
            self._expire_cookie(request)
            return
        if not config.store.client_side:
            session._identity = token
        max_age = config.cookie.max_age if session._max_age is None else session._max_age
        transport = self.transport
        if token != self.token or (max_age is not None and transport.resend_unchanged):
            self.header = transport.issue(
                # issuing(), inlined for a write's common case: the handler saw this request
                request if self.seen is request else self.issuing(request),
                config.cookie,
                token,
                max_age=None if max_age is None else min(max_age, ttl),
            )
            self.applied = False
        self.token = token
        self.live = True

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
        vary = headers.get(hdrs.VARY)
        if vary is None:
            headers[hdrs.VARY] = config.vary
        elif vary.strip() != "*":
            lowered = vary.lower()
            missing = [
                n
                for n, low in zip(config.vary.split(", "), config.vary_lower, strict=True)
                if low not in lowered
            ]
            if missing:
                headers[hdrs.VARY] = ", ".join([vary, *missing])


class RequestState:
    """What the middleware keeps on each request: the sessions set up, those in use.

    Built by the middleware field by field (``_new_state``), without an ``__init__`` call.
    """

    __slots__ = ("finished", "registry", "slots")

    registry: Registry
    slots: dict[str, Slot] | None  # created by the first get_session()
    finished: bool  # the middleware saved and set the cookie before prepare


_new_state = object.__new__
_NO_SLOTS: dict[str, Slot] | None = None  # typed, so that mypy does not narrow state.slots


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
        state: RequestState = _new_state(RequestState)
        state.registry = registry
        state.slots = _NO_SLOTS
        state.finished = False
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
                    if slot.due() and not slot.commit_now(request):
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
