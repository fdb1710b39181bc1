"""setup(), session_middleware(), get_session(), new_session(), save_session()."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import importlib.util
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, TypedDict, Unpack

from aiohttp import web
from aiohttp.typedefs import Middleware

from .abc import USER_INDEX_LIMIT, AbstractLegacyReader, AbstractStore, AbstractTransport
from .cookies import DEFAULT_COOKIE_NAME, CookieParams
from .exceptions import ConfigurationError
from .middleware import (
    STATE_KEY,
    Registry,
    SessionConfig,
    Slot,
    make_middleware,
    on_response_prepare,
)
from .observe import ENDED, EXPIRED, Listener, Observer, check_listeners, emit_event
from .serializers import JSONSerializer, Serializer
from .session import DEFAULT_CLOCK_SKEW_TOLERANCE, Session
from .transports import CookieTransport

__all__ = [
    "DEFAULT_ABSOLUTE_TIMEOUT",
    "DEFAULT_CLOCK_SKEW_TOLERANCE",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_STORE_TIMEOUT",
    "SessionOptions",
    "SetupOptions",
    "get_session",
    "new_session",
    "save_session",
    "session_middleware",
    "setup",
]

log = logging.getLogger("aiohttp_sessionkit")

#: A session unused for this long expires (when ``max_age`` is not given): 14 days.
DEFAULT_IDLE_TIMEOUT = 14 * 24 * 3600
#: No session outlives this, however active (or the idle timeout, if longer): 30 days.
DEFAULT_ABSOLUTE_TIMEOUT = 30 * 24 * 3600
#: Seconds a store operation may take before the request gets a 503.
DEFAULT_STORE_TIMEOUT = 5.0
#: The largest ``clock_skew_tolerance`` accepted: a host off by more needs its clock fixed.
MAX_CLOCK_SKEW_TOLERANCE = 3600


class SessionOptions(TypedDict, total=False):
    """The keyword options of :func:`setup` and :func:`session_middleware`, all optional.

    ``cookie_name`` (default ``"AIOHTTP_SESSION"``) names the session, whatever the
    transport: a second ``setup`` with another name gives an independent second session.
    ``max_age`` (default None): cookie lifetime in seconds; None is a browser-session
    cookie. ``path`` (``"/"``), ``domain`` (None), ``secure`` (None: added on HTTPS),
    ``httponly`` (True), ``samesite`` (``"Lax"``): the cookie's attributes.

    ``idle_timeout`` (default ``max_age``, else 14 days) expires unused sessions;
    ``absolute_timeout`` (default 30 days, or the idle timeout if longer) caps every
    session however active. A read refreshes an active session at most once per
    ``touch_interval`` seconds (default 60, or half the idle timeout when that is shorter;
    0 refreshes on every read). ``store_timeout`` (default 5 s; None: no limit) bounds each
    store call; past it the request gets a 503. ``serializer``: JSON unless given.

    ``clock_skew_tolerance`` (default 60 s, at most 3600): how far in the future a session's
    creation or last-access time may lie, as written by another application host whose
    clock runs ahead of this one's; a session beyond it opens as a fresh one, and the
    first such session is logged once per process.

    ``transport`` (default :class:`~aiohttp_sessionkit.CookieTransport`): where the token
    travels; a :class:`~aiohttp_sessionkit.HeaderTransport` for API clients, or a list of
    transports to accept several (a token in a header wins over a cookie; a request that
    presents none is answered on the first listed).

    ``legacy``: one or a list of :class:`~aiohttp_sessionkit.abc.AbstractLegacyReader` that
    open sessions another library wrote (see the migration guide).

    ``listeners``: callables that receive each :class:`~aiohttp_sessionkit.SessionEvent`
    (created, regenerated, ended and why); one that fails is logged, never fails the
    request. ``telemetry`` (default True): OpenTelemetry spans and metrics for store calls
    when ``opentelemetry-api`` is installed and an SDK is configured before ``setup``;
    False turns them off. See the observability guide.
    ``user_key`` (default None: off, and no cost): the session key that holds the user's id
    (a str or an int); a session saved with it set is bound to that user, so that
    :func:`~aiohttp_sessionkit.user_sessions`, :func:`~aiohttp_sessionkit.end_session` and
    :func:`~aiohttp_sessionkit.end_user_sessions` find it. ``max_sessions_per_user``
    (default None: up to the store's ceiling, 1000): binding one more session ends the
    user's least recently active ones. ``record_client`` (default False): also keep the
    User-Agent (at most 256 characters) and remote address seen when the session was
    bound, for a "your devices" page. See the "Sessions of a user" guide.
    """

    cookie_name: str
    max_age: int | None
    path: str
    domain: str | None
    secure: bool | None
    httponly: bool
    samesite: str | None
    idle_timeout: int | None
    absolute_timeout: int | None
    touch_interval: int | None
    store_timeout: float | None
    clock_skew_tolerance: int
    serializer: Serializer | None
    transport: AbstractTransport | Sequence[AbstractTransport] | None
    legacy: AbstractLegacyReader | Sequence[AbstractLegacyReader] | None
    listeners: Sequence[Listener] | None
    telemetry: bool
    user_key: str | None
    max_sessions_per_user: int | None
    record_client: bool


class SetupOptions(SessionOptions, total=False):
    """:class:`SessionOptions`, and what only :func:`setup` can do.

    ``purge_interval`` (default None: never): seconds between background
    ``store.purge_expired()`` runs, for stores whose native expiry lags (PostgreSQL, SQL).
    """

    purge_interval: float | None


_APP_REGISTRY = web.AppKey("aiohttp_sessionkit.registry", Registry)
_APP_STORES = web.AppKey("aiohttp_sessionkit.stores", list[object])


def _positive(name: str, value: object, *, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        kind = "0 or a positive" if zero else "a positive"
        raise ConfigurationError(f"{name}={value!r}: give {kind} whole number of seconds")
    return value


def _not_seconds_or_none(value: object) -> bool:
    """True unless ``value`` is None or a positive number of seconds (int or float)."""
    return value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
    )


def _listed(name: str, value: object, kind: type[Any]) -> tuple[Any, ...]:
    items = (value,) if isinstance(value, kind) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        items = (items,)
    bad = [item for item in items if not isinstance(item, kind)]
    if bad:
        raise ConfigurationError(
            f"{name}={value!r}: give a {kind.__name__} or a list of them, not "
            f"{type(bad[0]).__name__}"
        )
    return tuple(items)


def _config(
    store: AbstractStore | str, options: dict[str, Any], allowed: frozenset[str]
) -> SessionConfig:
    unknown = sorted(set(options) - allowed)
    if unknown:
        hint = difflib.get_close_matches(unknown[0], allowed, n=1)
        raise TypeError(
            f"unexpected keyword argument {unknown[0]!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else f"; the options are {sorted(allowed)}")
        )
    if isinstance(store, str):
        from .stores.url import store_from_url

        store = store_from_url(store)
    if not isinstance(store, AbstractStore):
        raise TypeError(
            f"store must be an AbstractStore (MemoryStore(), EncryptedCookieStore(key), ...) "
            f"or a store URL, not {type(store).__name__}"
        )
    max_age = options.get("max_age")
    cookie = CookieParams(
        name=options.get("cookie_name", DEFAULT_COOKIE_NAME),
        max_age=max_age,
        path=options.get("path", "/"),
        domain=options.get("domain"),
        secure=options.get("secure"),
        httponly=options.get("httponly", True),
        samesite=options.get("samesite", "Lax"),
    )
    idle_timeout = options.get("idle_timeout")
    if idle_timeout is None:
        idle_timeout = DEFAULT_IDLE_TIMEOUT if max_age is None else max_age
    idle = _positive("idle_timeout", idle_timeout)
    absolute_timeout = options.get("absolute_timeout")
    if absolute_timeout is None:
        absolute_timeout = max(DEFAULT_ABSOLUTE_TIMEOUT, idle)
    absolute = _positive("absolute_timeout", absolute_timeout)
    store.set_absolute_timeout(absolute)
    touch_interval = options.get("touch_interval")
    if touch_interval is None:
        # Derived, so it must fit every valid idle timeout: half of it, at most a minute
        # (0, a refresh on every read, for sessions shorter than two seconds).
        touch = min(60, idle // 2)
    else:
        touch = _positive("touch_interval", touch_interval, zero=True)
        if touch >= idle:
            raise ConfigurationError(
                f"touch_interval={touch} must be shorter than idle_timeout={idle}, or active "
                "sessions would expire between refreshes; leave it out for a fitting default"
            )
    store_timeout = options.get("store_timeout", DEFAULT_STORE_TIMEOUT)
    if _not_seconds_or_none(store_timeout):
        raise ConfigurationError(
            f"store_timeout={store_timeout!r}: give a positive number of seconds, or None for "
            "no limit"
        )
    tolerance = options.get("clock_skew_tolerance", DEFAULT_CLOCK_SKEW_TOLERANCE)
    if not _whole_number_in(tolerance, 0, MAX_CLOCK_SKEW_TOLERANCE):
        raise ConfigurationError(
            f"clock_skew_tolerance={tolerance!r}: give whole seconds from 0 to "
            f"{MAX_CLOCK_SKEW_TOLERANCE}; hosts whose clocks differ by more need NTP, not a "
            "wider tolerance"
        )
    serializer = options.get("serializer")
    if serializer is None:
        serializer = JSONSerializer()
    elif not isinstance(serializer, Serializer):
        raise ConfigurationError("serializer must have dumps(value) -> bytes and loads(bytes)")
    transport = options.get("transport")
    transports = (
        (CookieTransport(),)
        if transport is None
        else _listed("transport", transport, AbstractTransport)
    )
    if not transports:
        raise ConfigurationError("transport=[]: give at least one transport, or leave it out")
    legacy = options.get("legacy")
    readers = () if legacy is None else _listed("legacy", legacy, AbstractLegacyReader)
    observer = _observer(cookie.name, store, options)
    user_key, max_sessions, record_client = _user_options(store, options)
    store.set_store_timeout(store_timeout)
    if user_key is not None:
        store.set_user_key(user_key)
    return SessionConfig(
        store=store,
        cookie=cookie,
        idle_timeout=idle,
        absolute_timeout=absolute,
        touch_interval=touch,
        store_timeout=store_timeout,
        clock_skew_tolerance=tolerance,
        serializer=serializer,
        transports=transports,
        legacy=readers,
        observer=observer,
        user_key=user_key,
        max_sessions_per_user=max_sessions,
        record_client=record_client,
    )


def _observer(namespace: str, store: AbstractStore, options: dict[str, Any]) -> Observer | None:
    """The listeners and telemetry of one configuration; None when there are neither."""
    listeners = check_listeners(options.get("listeners"))
    telemetry_on = options.get("telemetry", True)
    if not isinstance(telemetry_on, bool):
        raise ConfigurationError(f"telemetry={telemetry_on!r}: give True or False")
    telemetry = None
    # find_spec imports nothing: without the otel extra, opentelemetry is never loaded.
    if telemetry_on and importlib.util.find_spec("opentelemetry") is not None:
        from .telemetry import Telemetry, configured

        if configured():
            telemetry = Telemetry(type(store).__name__)
    if not listeners and telemetry is None:
        return None
    return Observer(namespace, listeners, telemetry)


def _whole_number_in(value: object, low: int, high: int) -> bool:
    """True when ``value`` is an int (not a bool) from ``low`` to ``high``."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _user_options(
    store: AbstractStore, options: dict[str, Any]
) -> tuple[str | None, int | None, bool]:
    """``user_key``, ``max_sessions_per_user`` and ``record_client``, checked against what
    ``store`` can do (AbstractStore.user_index, AbstractStore.user_cutoff)."""
    user_key = options.get("user_key")
    max_sessions = options.get("max_sessions_per_user")
    record_client = options.get("record_client", False)
    name = type(store).__name__
    if user_key is not None and (not isinstance(user_key, str) or not user_key):
        raise ConfigurationError(
            f"user_key={user_key!r}: give the session key that holds the user's id (a "
            'non-empty str, such as "user_id"), or None to bind sessions to no one'
        )
    if not isinstance(record_client, bool):
        raise ConfigurationError(f"record_client={record_client!r}: give True or False")
    if max_sessions is not None and not _whole_number_in(max_sessions, 1, USER_INDEX_LIMIT):
        raise ConfigurationError(
            f"max_sessions_per_user={max_sessions!r}: give a whole number from 1 to "
            f"{USER_INDEX_LIMIT} (the ceiling per user), or None for the ceiling alone"
        )
    if user_key is None:
        if max_sessions is not None or record_client:
            option = "max_sessions_per_user" if max_sessions is not None else "record_client"
            raise ConfigurationError(
                f'{option} needs user_key: give setup(..., user_key="user_id") (the session '
                "key that holds the user's id) so sessions are bound to their users"
            )
        return None, None, False
    if not store.user_index and not store.user_cutoff:
        if store.client_side:
            how = (
                "give it a deny list (revocation=...) so it can end a user's sessions, or "
                "use a server-side store"
            )
        else:
            how = (
                f"the index is written by compare-and-swap, and {name} has no replace() "
                "(see ServerStore.replace): implement it, or use a store whose driver has it"
            )
        raise ConfigurationError(
            f"user_key={user_key!r}: {name} cannot keep an index of sessions by user; {how}"
        )
    if not store.user_index and (max_sessions is not None or record_client):
        option = "max_sessions_per_user" if max_sessions is not None else "record_client"
        raise ConfigurationError(
            f"{option}: {name} cannot list a user's sessions (it ends them by a cutoff time); "
            "leave it out, or use a server-side store"
        )
    return user_key, max_sessions, record_client


_SESSION_OPTIONS = frozenset(SessionOptions.__optional_keys__)
_SETUP_OPTIONS = frozenset(SetupOptions.__optional_keys__)


def setup(
    app: web.Application, store: AbstractStore | str, **options: Unpack[SetupOptions]
) -> None:
    """Install sessions on ``app``, stored in ``store`` (a store object or a store URL).

    The options are those of :class:`SetupOptions`. Call it again with another
    ``cookie_name`` for an independent second session. The store (and any legacy reader) is
    opened on application startup and closed on cleanup. Invalid settings raise
    :class:`~aiohttp_sessionkit.ConfigurationError` here, never per request.
    """
    config = _config(store, dict(options), _SETUP_OPTIONS)
    purge_interval = options.get("purge_interval")
    if _not_seconds_or_none(purge_interval):
        raise ConfigurationError(
            f"purge_interval={purge_interval!r}: give positive seconds or None"
        )
    registry = app.get(_APP_REGISTRY)
    if registry is None:
        registry = Registry(config)
        app[_APP_REGISTRY] = registry
        app[_APP_STORES] = []
        app.middlewares.append(make_middleware(registry))
        app.on_response_prepare.append(on_response_prepare)
    elif config.namespace in registry.by_name:
        raise ConfigurationError(
            f"a session is already set up under cookie_name={config.namespace!r}; give the "
            "second one another cookie_name"
        )
    else:
        _refuse_clashes(config, registry)
        registry.by_name[config.namespace] = config
    opened = app[_APP_STORES]
    resources: list[AbstractStore | AbstractLegacyReader] = [config.store, *config.legacy]
    for resource in resources:
        if not any(r is resource for r in opened):
            opened.append(resource)
            app.cleanup_ctx.append(
                _store_lifecycle(
                    resource,
                    purge_interval if resource is config.store else None,
                    config.observer,
                )
            )


def _store_lifecycle(
    store: AbstractStore | AbstractLegacyReader,
    purge_interval: float | None,
    observer: Observer | None = None,
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        if isinstance(store, AbstractStore):
            _refuse_lost_index(store, app[_APP_REGISTRY])
        purger = None
        if purge_interval is not None and isinstance(store, AbstractStore):
            purger = asyncio.create_task(_purge_forever(store, purge_interval, observer))
        try:
            yield
        finally:
            if purger is not None:
                purger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purger
            await store.close()

    return lifecycle


def _refuse_lost_index(store: AbstractStore, registry: Registry) -> None:
    """Refuse to start when ``store`` learnt on opening that it cannot keep the user index
    that a session set up on it needs (a third-party store whose ``merges`` is known only
    once connected; every built-in store can swap atomically on the servers it supports)."""
    for config in registry.by_name.values():
        if config.store is store and config.user_key is not None:
            if not store.user_index and not store.user_cutoff:
                raise ConfigurationError(
                    f"user_key={config.user_key!r}: {type(store).__name__} found on opening "
                    "that its server cannot swap a record atomically (compare-and-swap), so "
                    "it cannot keep an index of sessions by user; use a server that can, "
                    "or leave user_key out"
                )


async def _purge_forever(
    store: AbstractStore, interval: float, observer: Observer | None = None
) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            removed = await store.purge_expired()
        except Exception:  # a failed purge must not end the loop; the next one retries
            log.exception("purging expired sessions from %s failed", type(store).__name__)
        else:
            log.debug("purged %d expired sessions from %s", removed, type(store).__name__)
            if removed > 0:
                emit_event(observer, ENDED, handle=None, reason=EXPIRED, count=removed)


def _refuse_clashes(config: SessionConfig, registry: Registry) -> None:
    """A ConfigurationError if a transport of ``config`` clashes with one of a session that
    is already set up (AbstractTransport.clash)."""
    for other in registry.by_name.values():
        for ours in config.transports:
            for theirs in other.transports:
                reason = ours.clash(theirs) or theirs.clash(ours)
                if reason is not None:
                    raise ConfigurationError(
                        f"the sessions {other.namespace!r} and {config.namespace!r} cannot use "
                        f"{theirs!r} and {ours!r}: {reason}; give the second one its own "
                        "header= (or scheme=) and response_header="
                    )


def session_middleware(store: AbstractStore | str, **options: Unpack[SessionOptions]) -> Middleware:
    """The session middleware alone, for building the middleware list yourself.

    The options are those of :class:`SessionOptions`. Prefer :func:`setup`: it also opens
    and closes the store with the application and saves sessions of streaming responses
    and websockets when they are prepared. With this middleware alone, the store connects
    on first use, and a change that needs a new token after a response was prepared raises
    ``SessionResponseError``.
    """
    return make_middleware(Registry(_config(store, dict(options), _SESSION_OPTIONS)))


def _slot(request: web.Request, name: str | None) -> Slot:
    try:
        state = request[STATE_KEY]
    except KeyError:
        raise RuntimeError(
            "sessions are not set up for this request: call aiohttp_sessionkit.setup(app, "
            "store) before the application starts"
        ) from None
    config = state.registry.get(name)
    slots = state.slots
    if slots is None:
        slot = Slot(config)
        state.slots = {config.namespace: slot}
        return slot
    found = slots.get(config.namespace)
    if found is None:
        found = slots[config.namespace] = Slot(config)
    return found


def get_session(request: web.Request, name: str | None = None) -> Coroutine[Any, Any, Session]:
    """This request's session (the one set up first, or the one with cookie name ``name``).

    Use it as ``session = await get_session(request)``. Loaded from the store at most once
    per request, on the first call; concurrent calls share one load. Raises
    :class:`~aiohttp_sessionkit.StoreUnavailable` if the store cannot be reached (the
    middleware answers 503).
    """
    # A plain function returning the load coroutine: one coroutine per call, not two.
    return _slot(request, name).load(request)


async def new_session(request: web.Request, name: str | None = None) -> Session:
    """Replace this request's session with a fresh, empty one; the old record is deleted.

    The new session gets a new id when it is first saved, so an id known before login is
    worthless after it. To keep the data and change only the id, use
    :meth:`Session.regenerate`.
    """
    slot = _slot(request, name)
    slot.see(request)
    if slot.waiters is not None:  # let a load in progress finish before replacing its result
        await slot.load(request)
    if slot.session is None:
        slot.token = slot.presented(request)
    session = slot.config.store.session_class()
    session._established = True
    slot.replace(session)
    return session


async def save_session(request: web.Request, name: str | None = None) -> str | None:
    """Write the session now and return the token the client must present.

    The token is what the client sends back: with :class:`~aiohttp_sessionkit.HeaderTransport`
    the value for ``Authorization: Bearer <token>`` (a login route returns it in its body);
    with the cookie transport, the cookie's value. ``None`` when the session is empty or
    was invalidated. The response carries the token too, as every response that changes it
    does. Changes made after this call are saved on the way out as usual. Raises
    :class:`~aiohttp_sessionkit.StoreUnavailable` when the store cannot be reached (the
    middleware answers 503).
    """
    slot = _slot(request, name)
    slot.see(request)
    session = slot.session
    if session is None:
        session = await slot.load(request)
    await slot.commit(request)
    return slot.token if slot.live and not session.empty else None
