"""Batching: what concurrent requests ask of a store in one event-loop iteration, sent together.

Under load many requests want their sessions at the same moment, and a Python driver spends
far more CPU per command (connection checkout, packing, awaiting the reply) than the server
spends answering it: with redis-py, one GET per request costs many times what one key
inside a shared MGET does (figures in docs/performance.md). A driver therefore hands
its commands to a :class:`Batcher`, which sends those issued in one iteration of the event
loop in one round trip (one MGET, one pipeline, one query over an array of keys).

The first command of an iteration opens a batch and schedules its sending; commands issued
by the tasks that run in the same iteration join it; it leaves as soon as they have run.
No timer is involved, so a lone request is not delayed: its batch holds one command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from .exceptions import StoreError, StoreUnavailable

__all__ = ["Batcher", "each_on_failure"]

_Item = TypeVar("_Item")

#: Most commands sent in one round trip; a larger burst is split into several batches.
MAX_BATCH = 256


class Batcher(Generic[_Item]):
    """Gathers the commands issued in one event-loop iteration and sends them together.

    ``send(items)`` performs one round trip for a batch and returns one result per item, in
    order; a result that is an ``Exception`` instance fails that item alone. An exception
    raised by ``send`` fails every item of the batch.

    A caller that stops waiting (its time budget ran out, or its request was cancelled)
    before its batch leaves takes its command out of it; after, its result is dropped.
    When every caller of a batch has stopped waiting, the batch itself is cancelled, so
    that a driver waiting on a hung server drops that connection, as it would for a single
    cancelled command.
    """

    __slots__ = ("_loop", "_open", "_running", "_send")

    def __init__(self, send: Callable[[list[_Item]], Awaitable[list[Any]]]) -> None:
        self._send = send
        self._open: list[tuple[_Item, asyncio.Future[Any]]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: dict[asyncio.Task[None], list[tuple[_Item, asyncio.Future[Any]]]] = {}

    async def call(self, item: _Item) -> Any:
        """Queue ``item`` with the other commands of this iteration; return its result."""
        future = self._submit(item)
        try:
            return await future
        except asyncio.CancelledError:
            self._abandon(future)
            raise

    async def drain(self) -> None:
        """Wait until the batches already queued or sent have finished."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _submit(self, item: _Item) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        batch = self._open
        if batch is None or len(batch) >= MAX_BATCH or self._loop is not loop:
            batch = self._open = []
            self._loop = loop
            task = loop.create_task(self._flush(batch))
            self._running[task] = batch
            task.add_done_callback(self._running.pop)
        batch.append((item, future))
        return future

    def _abandon(self, future: asyncio.Future[Any]) -> None:
        for task, batch in self._running.items():
            if any(f is future for _, f in batch):
                if all(f.done() for _, f in batch):
                    if self._open is batch:
                        self._open = None
                    task.cancel()
                return

    async def _flush(self, batch: list[tuple[_Item, asyncio.Future[Any]]]) -> None:
        if self._open is batch:
            self._open = None  # from here on, new commands start the next batch
        batch = [entry for entry in batch if not entry[1].done()]  # callers that gave up
        if not batch:
            return
        try:
            results = await self._send([item for item, _ in batch])
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            for _, future in batch:
                if not future.done():
                    if cancelled:
                        future.cancel()
                    else:
                        future.set_exception(exc)
            if cancelled:
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


async def each_on_failure(
    items: list[_Item],
    many: Callable[[list[_Item]], Awaitable[list[Any]]],
    one: Callable[[_Item], Awaitable[Any]],
) -> list[Any]:
    """Send ``items`` with ``many`` in one statement; if that fails on a query error, each alone.

    A batch of one goes straight to ``one``. A query error (``StoreError``) in the shared
    statement is retried item by item with ``one``, so that a bad item fails alone and its
    neighbours succeed; ``StoreUnavailable`` fails the whole batch (the server is gone for
    all of them). Used by the SQL stores' batched reads, creates and updates.
    """
    if len(items) == 1:
        return [await one(items[0])]
    try:
        return await many(items)
    except StoreUnavailable:
        raise
    except StoreError:
        pass
    results: list[Any] = []
    for item in items:
        try:
            results.append(await one(item))
        except StoreError as exc:
            results.append(exc)
    return results
