"""Websockets that keep their session alive, and close when it ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

from aiohttp import WSCloseCode, WSMessage, web

from .abc import Merge
from .exceptions import StoreUnavailable
from .middleware import ENDED, SessionConfig, Slot
from .session import now

__all__ = ["SessionWebSocket", "session_websocket"]

log = logging.getLogger("aiohttp_sessionkit")

#: The close code sent when the session ends: RFC 6455's "policy violation", which browsers
#: pass to ``onclose`` as ``event.code == 1008``.
SESSION_ENDED = WSCloseCode.POLICY_VIOLATION


class SessionWebSocket:
    """Keeps one websocket's session alive while messages flow; closes the websocket (1008)
    when the session ends anywhere. Made by :func:`session_websocket`; iterate over it in
    place of the websocket, or call :meth:`activity` for each message received otherwise.

    Every ``touch_interval`` seconds (at least one) a background task asks the store whether
    the session's record still opens. If it does not (a logout in another tab, the user's
    sessions ended, expiry), or the absolute timeout has passed, the websocket is closed with
    code 1008. If messages arrived since the last check, the record is written back with a
    new last-access time, as a request that reads the session would refresh it: a touch at
    most once per interval, never past the absolute timeout.

    A client-side store (the cookie store, JWT) keeps the session in the client, which a
    websocket cannot update: the websocket closes at the absolute timeout, when a logout in
    this process ended the session, or, with a deny list (``revocation=``), when the deny
    list refuses the token (a logout or an end of the session in any process).
    """

    def __init__(
        self, request: web.Request, ws: web.WebSocketResponse, name: str | None = None
    ) -> None:
        from .api import _slot  # api imports this module's names for the package

        slot = _slot(request, name)
        if slot.session is None:
            raise RuntimeError(
                "call await get_session(request) before session_websocket(): the websocket "
                "keeps alive the session this request loaded"
            )
        self.request = request
        self.ws = ws
        self.slot: Slot = slot
        self.config: SessionConfig = slot.config
        self.active = False
        self.ended = False
        self._task: asyncio.Task[None] | None = None

    def activity(self) -> None:
        """Note that a message arrived: the next check refreshes the session."""
        self.active = True

    async def __aenter__(self) -> SessionWebSocket:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aiter__(self) -> AsyncIterator[WSMessage]:
        async for message in self.ws:
            self.active = True
            yield message

    async def _watch(self) -> None:
        interval = max(1, self.config.touch_interval)
        while not self.ws.closed:
            await asyncio.sleep(interval)
            try:
                alive = await self.check()
            except StoreUnavailable as exc:
                # A store blip must not cut every open websocket: the next check decides.
                log.warning("session of a websocket not checked, the store is unavailable: %s", exc)
                continue
            if not alive:
                self.ended = True
                await self.ws.close(code=SESSION_ENDED, message=b"session ended")
                return

    async def check(self) -> bool:
        """Whether the session still lives; refresh its record if messages arrived since the
        last check. Called every ``touch_interval`` by the background task."""
        slot, config = self.slot, self.config
        session = slot.session
        if session is None or not slot.live or slot.token is None:
            return True  # no stored session to keep (an anonymous, empty one)
        t = now()
        if t >= session._created + config.absolute_timeout:
            return False
        store = config.store
        token = slot.token
        if store.client_side:
            lineage = slot.lineage
            if lineage is not None and ENDED.holds(config.namespace, lineage[0]):
                return False
            if not store.revocable:
                return True
            # A deny list (revocation=) is shared by every process: a logout, end_session or
            # a user's cutoff anywhere refuses the token there, and its load says so.
            loaded = await config.call(store.load(token, namespace=config.namespace))
            return loaded is not None
        payload = await config.call(store.load(token, namespace=config.namespace))
        if payload is None:
            return False
        current = self.config.opened(payload, token)
        if current is None:
            return False
        if self.active:
            self.active = False
            # The record as stored now (other requests may have changed it), with a new
            # last-access time: a touch, not a write of this handler's older copy.
            idle = config.idle_timeout if current._max_age is None else current._max_age
            ttl = max(1, min(idle, current._created + config.absolute_timeout - t))
            data = config.dump(current, config.serializer, t)
            if config.save_merge:
                # A request that saved between our load and this write keeps its change:
                # the touch is then made on top of what it saved (a merging update).
                merging: Callable[..., Awaitable[str | None]] = store.save  # takes merge
                touch = Merge(payload, lambda newer: self._touched(newer, token, t))
                operation = merging(token, data, ttl=ttl, namespace=config.namespace, merge=touch)
            else:
                operation = store.save(token, data, ttl=ttl, namespace=config.namespace)
            saved = await config.call(operation)
            if saved is None:  # deleted between the load and the save
                return False
        return True

    def _touched(self, newer: Any, token: str, t: int) -> Any | None:
        """``Merge.rebase`` of a touch: the record another request saved, with a new last
        access; None when it no longer opens (ended meanwhile: nothing is written)."""
        session = self.config.opened(newer, token)
        config = self.config
        return None if session is None else config.dump(session, config.serializer, t)


def session_websocket(
    request: web.Request, ws: web.WebSocketResponse, name: str | None = None
) -> SessionWebSocket:
    """Tie the prepared websocket ``ws`` to this request's session (the one set up first, or
    the one named ``name``), which the handler loaded with ``get_session`` before.

    Use it as ``async with session_websocket(request, ws) as live: async for msg in live:``.
    See :class:`SessionWebSocket` for what it does.
    """
    return SessionWebSocket(request, ws, name)
