"""Lifecycle events (created, regenerated, ended and why) and their listeners.

The session layer reports what happened to sessions as :class:`SessionEvent` objects to the
listeners given to ``setup(..., listeners=[...])``, and to the OpenTelemetry counters when
telemetry is on (:mod:`aiohttp_sessionkit.telemetry`). An event never carries a token: a
server-side session is named by its record key (SHA-256 of the cookie name and the id, what
the store files it under), a client-side one by its lineage id, which opens nothing.

With no listener and no telemetry a configuration has no :class:`Observer` at all, and the
request path pays one ``is None`` test per point where an event could happen.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .exceptions import ConfigurationError
from .ids import record_key

if TYPE_CHECKING:
    from .telemetry import Telemetry

__all__ = [
    "CREATED",
    "ENDED",
    "ENDED_BY_USER",
    "END_REASONS",
    "EVICTED",
    "EXPIRED",
    "LOGOUT",
    "REGENERATED",
    "REVOKED",
    "Listener",
    "Observer",
    "SessionEvent",
    "emit_event",
    "session_handle",
]

log = logging.getLogger("aiohttp_sessionkit")

#: Event kinds.
CREATED: Final = "created"
REGENERATED: Final = "regenerated"
ENDED: Final = "ended"

#: Why a session ended (``SessionEvent.reason`` of an ``"ended"`` event).
#: The application ended it: ``invalidate()``, or a change that left it empty.
LOGOUT: Final = "logout"
#: Its idle or absolute timeout passed: found by a request that presented it, or removed by
#: ``purge_expired`` (one event with ``count``, no handle).
EXPIRED: Final = "expired"
#: Dropped to make room for a newer session of the same user (``max_sessions_per_user``).
EVICTED: Final = "evicted"
#: Ended by ``end_session`` or ``end_user_sessions`` (a "log out my other devices" page, an
#: administrator, a password change).
ENDED_BY_USER: Final = "ended_by_user"
#: Revoked by the application outside any request of that session (a deny list, a ban).
REVOKED: Final = "revoked"
END_REASONS: Final = frozenset({LOGOUT, EXPIRED, EVICTED, ENDED_BY_USER, REVOKED})


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """Something that happened to one session (or, for a purge, to ``count`` of them).

    ``kind`` is ``"created"``, ``"regenerated"`` (a login: new id, same or fresh data) or
    ``"ended"`` with a ``reason`` (``observe.END_REASONS``). ``cookie_name`` names the session
    set up with ``setup(..., cookie_name=...)``. ``handle`` is opaque and not secret: the
    record key of a server-side session (the same for every event of that record), the
    lineage id of a client-side one, or None when there is none to give. ``user_id`` is the
    user the session is bound to, when there is one.
    """

    kind: str
    cookie_name: str
    handle: str | None
    reason: str | None = None
    user_id: str | None = None
    count: int = 1


#: A listener gets each event; it may return an awaitable (an ``async def``), which runs as
#: a task of its own so that a slow audit log never delays the response.
Listener = Callable[[SessionEvent], Any]


def session_handle(
    namespace: str, token: str | None, client_side: bool, lineage: str | None
) -> str | None:
    """The handle of a session: its record key (server side), or its lineage (client side)."""
    if client_side:
        return lineage
    if token is None:
        return None
    return record_key(namespace, token)


class Observer:
    """Where the events of one configuration go: its listeners, then its telemetry."""

    __slots__ = ("listeners", "namespace", "tasks", "telemetry")

    def __init__(
        self, namespace: str, listeners: Sequence[Listener], telemetry: Telemetry | None
    ) -> None:
        self.namespace = namespace
        self.listeners = tuple(listeners)
        self.telemetry = telemetry
        # Tasks of async listeners still running: held here, or the loop may collect them.
        self.tasks: set[asyncio.Task[Any]] = set()

    def emit(self, event: SessionEvent) -> None:
        """Give ``event`` to every listener; one that fails is logged and the rest still run."""
        telemetry = self.telemetry
        if telemetry is not None:
            telemetry.count(event)
        for listener in self.listeners:
            try:
                result = listener(event)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self.tasks.add(task)
                    task.add_done_callback(functools.partial(self._finished, listener, event))
            except Exception as exc:
                self._failed(listener, event, exc)

    def _finished(self, listener: Listener, event: SessionEvent, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            try:
                raise task.exception()  # type: ignore[misc]
            except Exception as exc:
                self._failed(listener, event, exc)

    def _failed(self, listener: Listener, event: SessionEvent, exc: BaseException) -> None:
        # The exception's type only, no traceback: its message or frames might quote what
        # the listener held, and nothing here may bring a session's contents into a log.
        log.error(
            "session event listener %s failed on a %r event of %r (%s); the request goes on",
            getattr(listener, "__qualname__", type(listener).__name__),
            event.kind,
            self.namespace,
            type(exc).__name__,
        )


def check_listeners(value: object) -> tuple[Listener, ...]:
    """``setup(..., listeners=...)`` as a tuple of callables, or a ConfigurationError."""
    if value is None:
        return ()
    items = (value,) if callable(value) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise ConfigurationError(
            f"listeners={value!r}: give a list of callables that take a SessionEvent"
        )
    bad = [item for item in items if not callable(item)]
    if bad:
        raise ConfigurationError(
            f"listeners: {bad[0]!r} is not callable; give functions that take a SessionEvent"
        )
    return tuple(items)


def emit_event(
    observer: Observer | None,
    kind: str,
    *,
    handle: str | None,
    reason: str | None = None,
    user_id: str | None = None,
    count: int = 1,
) -> None:
    """Report one event to ``observer`` (a ``SessionConfig.observer``); nothing when None.

    The one entry point for code paths outside a request's commit (eviction by
    ``max_sessions_per_user``: ``reason=EVICTED``; ``end_session`` / ``end_user_sessions``:
    ``reason=ENDED_BY_USER``; a revocation: ``reason=REVOKED``). Never pass a token as
    ``handle``: pass the record key (``ids.record_key``) or a lineage id.
    """
    if observer is None:
        return
    if kind == ENDED and reason not in END_REASONS:
        raise ValueError(f"an ended event needs a reason from {sorted(END_REASONS)}")
    observer.emit(
        SessionEvent(
            kind=kind,
            cookie_name=observer.namespace,
            handle=handle,
            reason=reason,
            user_id=user_id,
            count=count,
        )
    )
