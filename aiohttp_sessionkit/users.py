"""A user's sessions: list them, end one, end them all (``setup(..., user_key=...)``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from aiohttp import web

from .api import _APP_REGISTRY, _slot
from .exceptions import ConfigurationError
from .middleware import (
    STATE_KEY,
    SessionConfig,
    Slot,
    last_seen_of,
    user_of,
)
from .observe import ENDED, ENDED_BY_USER, emit_event
from .session import Session

__all__ = ["SessionInfo", "end_session", "end_user_sessions", "user_sessions"]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session of a user, as :func:`user_sessions` lists it."""

    #: An opaque, non-secret reference to the session, for :func:`end_session`: it cannot
    #: open the session (it is a hash of the session's id), so it may be shown in a page.
    handle: str
    #: When the session was created (a login), in UTC.
    created: datetime
    #: When the session was last saved or refreshed (within ``touch_interval``), in UTC.
    last_seen: datetime
    #: When the session expires unless used again (idle, ``max_age`` or absolute timeout).
    expires: datetime
    #: True for the session of the request passed in.
    current: bool
    #: The User-Agent (at most 256 characters) and remote address seen when the session
    #: was bound to the user; None unless ``setup(..., record_client=True)``.
    user_agent: str | None
    remote: str | None


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _config(request_or_app: web.Request | web.Application, name: str | None) -> SessionConfig:
    if isinstance(request_or_app, web.Application):
        registry = request_or_app.get(_APP_REGISTRY)
        if registry is None:
            raise RuntimeError(
                "sessions are not set up on this application: call "
                "aiohttp_sessionkit.setup(app, store, user_key=...) first"
            )
    elif isinstance(request_or_app, web.Request):
        try:
            registry = request_or_app[STATE_KEY].registry
        except KeyError:
            raise RuntimeError(
                "sessions are not set up for this request: call "
                "aiohttp_sessionkit.setup(app, store, user_key=...) before the application starts"
            ) from None
    else:
        raise TypeError(
            f"give a web.Request or a web.Application, not {type(request_or_app).__name__}"
        )
    config = registry.get(name)
    if config.user_key is None:
        raise ConfigurationError(
            f"the session {config.namespace!r} binds sessions to no user: give "
            'setup(..., user_key="user_id") (the session key that holds the user\'s id)'
        )
    return config


def _user(user_id: object) -> str | None:
    """``user_id`` as the index knows it; None for one too long to be bound to anything."""
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise TypeError(f"a user id is a str or an int, not {type(user_id).__name__}")
    return user_of(user_id)


async def _current(request: web.Request, name: str | None) -> tuple[Slot, str | None]:
    """The request's slot, loaded, and the user its live session is bound to."""
    slot = _slot(request, name)
    session = await slot.load(request)
    config = slot.config
    assert config.user_key is not None
    user = user_of(session.get(config.user_key)) if slot.live else None
    return slot, user


def _handle_of(slot: Slot) -> str | None:
    config = slot.config
    if not slot.live or slot.token is None:
        return None
    return config.store.handle(slot.token, namespace=config.namespace)


async def user_sessions(
    request_or_app: web.Request | web.Application, user_id: str | int, *, name: str | None = None
) -> list[SessionInfo]:
    """The live sessions of ``user_id``, the most recently active first.

    Given a request, the request's own session is marked ``current``. Sessions ended,
    regenerated or expired are not listed (and are dropped from the index as it is read).
    Raises :class:`~aiohttp_sessionkit.StoreUnavailable` when the store cannot be
    reached, and :class:`~aiohttp_sessionkit.StoreError` for a store that cannot list
    (a client-side store: a server-side one is needed).
    """
    config = _config(request_or_app, name)
    user = _user(user_id)
    if user is None:
        return []
    current = None
    if isinstance(request_or_app, web.Request):
        slot, _ = await _current(request_or_app, name)
        current = _handle_of(slot)
    store = config.store
    opened: dict[int, Session] = {}
    judge = last_seen_of(config, user, opened)
    records = await config.call(
        store.user_records(user, namespace=config.namespace, last_seen=judge)
    )
    infos = []
    for record in records:
        # The payloads the judge opened, as they are: a store that hands back copies has
        # them opened again here.
        session = opened.get(id(record.payload)) or config.opened(record.payload)
        if session is None:
            continue
        idle = config.idle_timeout if session.max_age is None else session.max_age
        infos.append(
            SessionInfo(
                handle=record.handle,
                created=_utc(session.created),
                last_seen=_utc(session.last_access),
                expires=_utc(
                    min(session.last_access + idle, session.created + config.absolute_timeout)
                ),
                current=record.handle == current,
                user_agent=record.user_agent,
                remote=record.remote,
            )
        )
    # The request's own session is active right now: first among equals.
    infos.sort(key=lambda info: (info.last_seen, info.current, info.created), reverse=True)
    return infos


async def end_session(
    request_or_app: web.Request | web.Application, handle: str, *, name: str | None = None
) -> bool:
    """End the session ``handle`` names (from :func:`user_sessions`); True if it was ended.

    Given a request, only a session of the request's own user ends: any other handle
    (another user's, another store's, a forged one) returns False and ends nothing. The
    request's own session ends as with ``session.invalidate()``. Given the application,
    any session of the store ends (an administrator's tool). Raises
    :class:`~aiohttp_sessionkit.StoreUnavailable` when the store cannot be reached.
    """
    config = _config(request_or_app, name)
    store = config.store
    namespace = config.namespace
    if not isinstance(cast(object, handle), str):  # from a form or a URL: anything
        return False
    owner = None
    if isinstance(request_or_app, web.Request):
        slot, owner = await _current(request_or_app, name)
        if owner is None:
            return False
        if handle == _handle_of(slot):
            assert slot.token is not None and slot.session is not None
            await config.call(store.delete(slot.token, namespace=namespace))
            slot.session.invalidate()  # the response expires the client's token
            return True
    # The record itself says whose it is (an index entry could be stale): a handle that
    # names no live session (garbage, another store's, an index record) ends nothing.
    payload = await config.call(store.load_handle(handle, namespace=namespace))
    session = None if payload is None else config.opened(payload)
    if session is None:
        return False
    assert config.user_key is not None
    user = user_of(session.get(config.user_key))
    if owner is not None and user != owner:
        return False  # another user's session: a request ends only its own user's
    await config.call(store.end_handle(handle, namespace=namespace))
    if user is not None:
        await config.call(store.unbind_user(handle, user, namespace=namespace))
    emit_event(config.observer, ENDED, handle=handle, reason=ENDED_BY_USER, user_id=user)
    return True


async def end_user_sessions(
    request_or_app: web.Request | web.Application,
    user_id: str | int,
    *,
    keep_current: bool = False,
    name: str | None = None,
) -> int:
    """End every session of ``user_id``; return how many were ended.

    ``keep_current=True`` (with a request only) spares the request's own session when it
    is one of that user's: the recipe after a password change. Otherwise the request's
    own session, if it is the user's, ends too (as with ``session.invalidate()``). Given
    the application it works outside any request (an administrator's handler, a
    background task). A request of the user still running cannot bring an ended session
    back. Raises :class:`~aiohttp_sessionkit.StoreUnavailable` when the store cannot be
    reached.
    """
    config = _config(request_or_app, name)
    if keep_current and not isinstance(request_or_app, web.Request):
        raise ValueError(
            "keep_current=True needs the request whose session to keep: pass the request, "
            "not the application"
        )
    user = _user(user_id)
    if user is None:
        return 0
    store = config.store
    slot = None
    keep = None
    if isinstance(request_or_app, web.Request):
        slot, current_user = await _current(request_or_app, name)
        if current_user != user:
            slot = None  # the request's own session is not among them
        elif keep_current:
            keep = _handle_of(slot)
    ended: int = await config.call(
        store.end_user(
            user, namespace=config.namespace, last_seen=last_seen_of(config, user), keep=keep
        )
    )
    reported = ended
    if slot is not None:
        session = slot.session
        assert session is not None
        if not keep_current:
            session.invalidate()  # its record is gone: the response expires the client's token
            reported -= 1  # the request's own session: its commit reports it, as a logout
    if reported > 0:
        # One event for them all: the store ends them in one pass and counts them.
        emit_event(
            config.observer, ENDED, handle=None, reason=ENDED_BY_USER, user_id=user, count=reported
        )
    return ended
