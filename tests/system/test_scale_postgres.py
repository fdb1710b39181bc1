"""PostgresStore on a primary with a streaming replica: the primary dies, the replica is promoted.

The store is given a multi-host DSN with ``target_session_attrs=read-write``, so its pool
only ever connects to the server that accepts writes; after the promotion it finds the new
primary by itself, without a restart. The replication mode decides what survives: an
asynchronous replica may miss the last acknowledged commits, a synchronous one may not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from aiohttp_sessionkit.stores.postgres import PostgresStore
from tests.harness.cluster_servers import PostgresPair
from tests.harness.failover import Traffic, check_answers, running
from tests.system.test_scale_redis import (
    PRE_FAILURE_SESSIONS,
    REQUEST_BUDGET,
    USERS,
    app_client,
    assert_sessions_survived,
    assert_users_kept_their_counts,
    report,
    write_sessions,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("synchronous", [False, True], ids=["asynchronous", "synchronous"])
async def test_primary_killed_and_replica_promoted_under_load(
    aiohttp_client: Any, postgres_pair_factory: Callable[..., PostgresPair], synchronous: bool
) -> None:
    pair = await asyncio.to_thread(postgres_pair_factory, synchronous=synchronous)
    store = PostgresStore(pair.dsn, table="sessions_failover")
    client = await app_client(aiohttp_client, store)  # the app closes the store it owns
    written = await write_sessions(client, PRE_FAILURE_SESSIONS)
    await asyncio.to_thread(pair.replayed_lsn_caught_up)
    traffic = Traffic(client, lambda cookie: "all", users=USERS)
    async with running(traffic):
        await asyncio.sleep(0.3)  # the stream flows before the fault
        # The replica is cut off, as by a partition or lag, so that the crash lands
        # inside the replication window for sure instead of by luck.
        paused_at = time.monotonic()
        await asyncio.to_thread(pair.cut_replication)
        if synchronous:
            # Commits now wait for the replica: requests run out of store_timeout.
            await wait_for(lambda: any(a.status == 503 for a in traffic.since(paused_at)))
        else:
            # Commits are acknowledged without it.
            await wait_for(lambda: sum(a.status == 200 for a in traffic.since(paused_at)) >= 20)
        fault_at = time.monotonic()
        await asyncio.to_thread(pair.primary.crash)
        crashed_at = time.monotonic()
        # What an operator (or Patroni, repmgr...) does: promote the replica.
        await asyncio.to_thread(pair.replica.promote)
        promoted_at = time.monotonic()
        recovered = await traffic.wait_success("all", promoted_at)
    check_answers(traffic.answers, budget=REQUEST_BUDGET)
    # Writes the app acknowledged between the cut and the crash: at most this many can
    # have been lost.
    acked_in_window = sum(
        a.status == 200 and paused_at <= a.started <= crashed_at for a in traffic.answers
    )
    failed = [a for a in traffic.answers if a.status != 200]
    # Requests answered after the crash were served by the promoted replica: the old
    # primary is gone for good. (A request may also ride out the switch: the store retries
    # a dead connection once, and the pool reconnects through the DSN's host list.)
    assert not pair.primary.is_running
    assert recovered.started >= promoted_at
    await assert_sessions_survived(client, written)
    await assert_users_kept_their_counts(client, traffic)
    mode = "synchronous" if synchronous else "asynchronous"
    report(
        f"postgres {mode}: {traffic.statuses()}; {acked_in_window} writes acknowledged while "
        f"the replica lagged; crash took {crashed_at - fault_at:.2f} s, "
        f"promoted {promoted_at - fault_at:.2f} s after the kill; last 503 "
        f"{max((a.finished - fault_at for a in failed), default=0):.2f} s after it; serving again "
        f"{recovered.finished - fault_at:.2f} s after it; acknowledged writes lost: "
        f"{traffic.lost_writes()}, sessions lost: {traffic.lost_sessions()}"
    )
    if synchronous:
        # Every commit the app acknowledged had reached the replica's disk (a request of
        # the window may still have been acknowledged before the replica detached).
        assert (traffic.lost_writes(), traffic.lost_sessions()) == (0, 0)
    else:
        # What the primary acknowledged alone died with it (users whose next increment
        # has not come back yet are not counted: a lower bound).
        assert 0 < traffic.lost_writes() <= acked_in_window


async def wait_for(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polls the traffic's record of answers
            await asyncio.sleep(0.02)
