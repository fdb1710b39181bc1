"""Batcher: commands of one event-loop iteration go together; callers stay independent.

The stores' own test files check the same through real servers (one MGET for concurrent
reads, one connection for concurrent writes, hung servers); these tests pin the rules.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aiohttp_sessionkit.batching import MAX_BATCH, Batcher


class Recorder:
    """A send function that records its batches and answers item * 10 (or what it is told)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate: asyncio.Event | None = None
        self.cancelled = 0

    async def send(self, items: list[int]) -> list[Any]:
        self.batches.append(list(items))
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_commands_issued_in_one_iteration_share_one_batch() -> None:
    rec = Recorder()
    batcher: Batcher[int] = Batcher(rec.send)
    assert await asyncio.gather(*(batcher.call(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert rec.batches == [[0, 1, 2, 3, 4]]


async def test_a_lone_command_goes_alone_and_a_later_one_starts_a_new_batch() -> None:
    rec = Recorder()
    batcher: Batcher[int] = Batcher(rec.send)
    assert await batcher.call(1) == 10
    assert await batcher.call(2) == 20
    assert rec.batches == [[1], [2]]


async def test_a_burst_larger_than_the_limit_is_split() -> None:
    rec = Recorder()
    batcher: Batcher[int] = Batcher(rec.send)
    n = MAX_BATCH + 3
    assert await asyncio.gather(*(batcher.call(i) for i in range(n))) == [i * 10 for i in range(n)]
    assert [len(b) for b in rec.batches] == [MAX_BATCH, 3]


async def test_an_item_level_error_fails_only_that_caller() -> None:
    rec = Recorder()
    batcher: Batcher[int] = Batcher(rec.send)
    results = await asyncio.gather(*(batcher.call(i) for i in (1, -1, 2)), return_exceptions=True)
    assert results[0] == 10 and results[2] == 20
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad -1"


async def test_a_failed_round_trip_fails_every_caller_of_the_batch() -> None:
    async def send(items: list[int]) -> list[Any]:
        raise ConnectionResetError("gone")

    batcher: Batcher[int] = Batcher(send)
    results = await asyncio.gather(*(batcher.call(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionResetError) for r in results)
    with pytest.raises(ConnectionResetError):  # and the next batch gets its own answer
        await batcher.call(1)


async def test_a_caller_that_stops_waiting_does_not_cancel_the_others() -> None:
    rec = Recorder()
    rec.gate = asyncio.Event()
    batcher: Batcher[int] = Batcher(rec.send)
    calls = [asyncio.ensure_future(batcher.call(i)) for i in range(3)]
    await asyncio.sleep(0)  # the callers queue their commands
    await asyncio.sleep(0)  # the batch leaves and waits on the gate
    calls[1].cancel()
    await asyncio.sleep(0)
    rec.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0] == 0 and results[2] == 20
    assert isinstance(results[1], asyncio.CancelledError)
    assert rec.cancelled == 0


async def test_when_every_caller_stops_waiting_the_batch_is_cancelled() -> None:
    rec = Recorder()
    rec.gate = asyncio.Event()  # never set: a hung server
    batcher: Batcher[int] = Batcher(rec.send)
    calls = [asyncio.ensure_future(batcher.call(i)) for i in range(3)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    await batcher.drain()
    assert rec.cancelled == 1
    rec.gate = None
    assert await batcher.call(4) == 40  # the next batch is a fresh one


async def test_callers_timing_out_before_the_batch_leaves_leave_nothing_behind() -> None:
    rec = Recorder()
    batcher: Batcher[int] = Batcher(rec.send)
    call = asyncio.ensure_future(batcher.call(1))
    await asyncio.sleep(0)  # queued; the batch has not run yet
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await batcher.drain()
    assert await batcher.call(2) == 20
    assert rec.batches == [[2]]


async def test_drain_waits_for_batches_in_flight() -> None:
    rec = Recorder()
    rec.gate = asyncio.Event()
    batcher: Batcher[int] = Batcher(rec.send)
    call = asyncio.ensure_future(batcher.call(7))
    await asyncio.sleep(0)
    drained = asyncio.ensure_future(batcher.drain())
    await asyncio.sleep(0.01)
    assert not drained.done()
    rec.gate.set()
    await drained
    assert call.result() == 70
