"""setup(), session_middleware(), get_session(), new_session()."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from .abc import AbstractStore
from .cookies import DEFAULT_COOKIE_NAME, CookieParams
from .exceptions import ConfigurationError
from .middleware import (
    STATE_KEY,
    Registry,
    RequestState,
    SessionConfig,
    Slot,
    make_middleware,
    on_response_prepare,
    presented_cookie,
)
from .serializers import JSONSerializer, Serializer
from .session import Session

__all__ = [
    "DEFAULT_ABSOLUTE_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_STORE_TIMEOUT",
    "get_session",
    "new_session",
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

_APP_REGISTRY = web.AppKey("aiohttp_sessionkit.registry", Registry)
_APP_STORES = web.AppKey("aiohttp_sessionkit.stores", list[AbstractStore])


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name}={value!r}: give a positive whole number of seconds")
    return value


def _config(
    store: AbstractStore | str,
    *,
    cookie_name: str,
    max_age: int | None,
    path: str,
    domain: str | None,
    secure: bool | None,
    httponly: bool,
    samesite: str | None,
    idle_timeout: int | None,
    absolute_timeout: int | None,
    touch_interval: int | None,
    store_timeout: float | None,
    serializer: Serializer | None,
) -> SessionConfig:
    if isinstance(store, str):
        from .stores.url import store_from_url

        store = store_from_url(store)
    if not isinstance(store, AbstractStore):
        raise TypeError(
            f"store must be an AbstractStore (MemoryStore(), EncryptedCookieStore(key), ...) "
            f"or a store URL, not {type(store).__name__}"
        )
    cookie = CookieParams(
        name=cookie_name,
        max_age=max_age,
        path=path,
        domain=domain,
        secure=secure,
        httponly=httponly,
        samesite=samesite,
    )
    if idle_timeout is None:
        idle_timeout = DEFAULT_IDLE_TIMEOUT if max_age is None else max_age
    idle = _positive("idle_timeout", idle_timeout)
    if absolute_timeout is None:
        absolute_timeout = max(DEFAULT_ABSOLUTE_TIMEOUT, idle)
    absolute = _positive("absolute_timeout", absolute_timeout)
    if touch_interval is None:
        touch_interval = max(1, min(60, idle // 2))
    touch = _positive("touch_interval", touch_interval)
    if touch >= idle:
        raise ConfigurationError(
            f"touch_interval={touch} must be shorter than idle_timeout={idle}, or active "
            "sessions would expire between refreshes"
        )
    if store_timeout is not None and (
        isinstance(store_timeout, bool)
        or not isinstance(store_timeout, (int, float))
        or store_timeout <= 0
    ):
        raise ConfigurationError(
            f"store_timeout={store_timeout!r}: give a positive number of seconds, or None for "
            "no limit"
        )
    if serializer is None:
        serializer = JSONSerializer()
    elif not isinstance(serializer, Serializer):
        raise ConfigurationError("serializer must have dumps(value) -> bytes and loads(bytes)")
    return SessionConfig(
        store=store,
        cookie=cookie,
        idle_timeout=idle,
        absolute_timeout=absolute,
        touch_interval=touch,
        store_timeout=store_timeout,
        serializer=serializer,
    )


def setup(
    app: web.Application,
    store: AbstractStore | str,
    *,
    cookie_name: str = DEFAULT_COOKIE_NAME,
    max_age: int | None = None,
    path: str = "/",
    domain: str | None = None,
    secure: bool | None = None,
    httponly: bool = True,
    samesite: str | None = "Lax",
    idle_timeout: int | None = None,
    absolute_timeout: int | None = None,
    touch_interval: int | None = None,
    store_timeout: float | None = DEFAULT_STORE_TIMEOUT,
    purge_interval: float | None = None,
    serializer: Serializer | None = None,
) -> None:
    """Install sessions on ``app``, stored in ``store`` (a store object or a store URL).

    Call it again with another ``cookie_name`` for an independent second session. The
    store is opened on application startup and closed on cleanup. Invalid settings raise
    :class:`~aiohttp_sessionkit.ConfigurationError` here, never per request.

    ``max_age``: cookie lifetime in seconds (None: until the browser closes). ``idle_timeout``
    (default ``max_age``, else 14 days) expires unused sessions; ``absolute_timeout``
    (default 30 days, or the idle timeout if longer) caps every session however active.
    An active session is refreshed at most once per ``touch_interval`` seconds (default
    60). ``store_timeout`` bounds each store call; past it the request gets a 503.
    ``purge_interval``: seconds between background ``store.purge_expired()`` runs, for
    stores whose native expiry lags (None: never).
    """
    config = _config(
        store,
        cookie_name=cookie_name,
        max_age=max_age,
        path=path,
        domain=domain,
        secure=secure,
        httponly=httponly,
        samesite=samesite,
        idle_timeout=idle_timeout,
        absolute_timeout=absolute_timeout,
        touch_interval=touch_interval,
        store_timeout=store_timeout,
        serializer=serializer,
    )
    if purge_interval is not None and (
        isinstance(purge_interval, bool)
        or not isinstance(purge_interval, (int, float))
        or purge_interval <= 0
    ):
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
        registry.by_name[config.namespace] = config
    stores = app[_APP_STORES]
    if not any(s is config.store for s in stores):
        stores.append(config.store)
        app.cleanup_ctx.append(_store_lifecycle(config.store, purge_interval))


def _store_lifecycle(
    store: AbstractStore, purge_interval: float | None
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        purger = None
        if purge_interval is not None:
            purger = asyncio.create_task(_purge_forever(store, purge_interval))
        try:
            yield
        finally:
            if purger is not None:
                purger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purger
            await store.close()

    return lifecycle


async def _purge_forever(store: AbstractStore, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            removed = await store.purge_expired()
        except Exception:  # a failed purge must not end the loop; the next one retries
            log.exception("purging expired sessions from %s failed", type(store).__name__)
        else:
            log.debug("purged %d expired sessions from %s", removed, type(store).__name__)


def session_middleware(
    store: AbstractStore | str,
    *,
    cookie_name: str = DEFAULT_COOKIE_NAME,
    max_age: int | None = None,
    path: str = "/",
    domain: str | None = None,
    secure: bool | None = None,
    httponly: bool = True,
    samesite: str | None = "Lax",
    idle_timeout: int | None = None,
    absolute_timeout: int | None = None,
    touch_interval: int | None = None,
    store_timeout: float | None = DEFAULT_STORE_TIMEOUT,
    serializer: Serializer | None = None,
) -> Middleware:
    """The session middleware alone, for building the middleware list yourself.

    Prefer :func:`setup`: it also opens and closes the store with the application and saves
    sessions of streaming responses and websockets when they are prepared. With this
    middleware alone, the store connects on first use, and a change that needs a new
    cookie after a response was prepared raises ``SessionResponseError``.
    """
    config = _config(
        store,
        cookie_name=cookie_name,
        max_age=max_age,
        path=path,
        domain=domain,
        secure=secure,
        httponly=httponly,
        samesite=samesite,
        idle_timeout=idle_timeout,
        absolute_timeout=absolute_timeout,
        touch_interval=touch_interval,
        store_timeout=store_timeout,
        serializer=serializer,
    )
    return make_middleware(Registry(config))


def _slot(request: web.Request, name: str | None) -> Slot:
    state: RequestState | None = request.get(STATE_KEY)
    if state is None:
        raise RuntimeError(
            "sessions are not set up for this request: call aiohttp_sessionkit.setup(app, "
            "store) before the application starts"
        )
    config = state.registry.get(name)
    slots = state.slots
    if slots is None:
        slots = {}
        state.slots = slots
    slot = slots.get(config.namespace)
    if slot is None:
        slot = slots[config.namespace] = Slot(config)
    return slot


async def get_session(request: web.Request, name: str | None = None) -> Session:
    """This request's session (the one set up first, or the one with cookie name ``name``).

    Loaded from the store at most once per request, on the first call; concurrent calls
    share one load. Raises :class:`~aiohttp_sessionkit.StoreUnavailable` if the store
    cannot be reached (the middleware answers 503).
    """
    slot = _slot(request, name)
    session = slot.session
    if session is not None:
        return session
    return await slot.load(request)


async def new_session(request: web.Request, name: str | None = None) -> Session:
    """Replace this request's session with a fresh, empty one; the old record is deleted.

    The new session gets a new id when it is first saved, so an id known before login is
    worthless after it. To keep the data and change only the id, use
    :meth:`Session.regenerate`.
    """
    slot = _slot(request, name)
    if slot.waiters is not None:  # let a load in progress finish before replacing its result
        await slot.load(request)
    if slot.session is None:
        slot.token = presented_cookie(request, slot.config.namespace)
    session = Session()
    slot.replace(session)
    return session
