"""Does sharing statements pay for SQLAlchemyStore? Operations per second, batching on/off.

Usage: python3 scripts/measure-sql-batching.py URL [URL ...]   (run from the repo root)

For each URL and operation (get, update, create), WORKERS tasks call the store in a loop for
SECONDS; the same run is repeated with the store's batching for that operation turned off.
Rounds alternate on/off so that a loaded machine skews both alike; the best round counts.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

from aiohttp_sessionkit.ids import new_session_id, record_key
from aiohttp_sessionkit.stores import sql

WORKERS = 64
SECONDS = 2.0
ROUNDS = 3
SESSIONS = 256
PAYLOAD = b'{"user": "alice", "n": 12345, "roles": ["a", "b"]}'


async def run(url: str, op: str, batched: bool) -> float:
    dialect = sql.sa.make_url(url).get_backend_name()
    saved = sql._BATCHING.get(dialect, frozenset())
    sql._BATCHING[dialect] = saved | {op} if batched else saved - {op}
    try:
        store = sql.SQLAlchemyStore(url, table=f"bench_{uuid.uuid4().hex[:8]}")
    finally:
        sql._BATCHING[dialect] = saved
    keys = [record_key("ns", new_session_id()) for _ in range(SESSIONS)]
    for key in keys:
        assert await store.create(key, PAYLOAD, 3600)
    done = 0
    deadline = time.monotonic() + SECONDS

    async def worker(i: int) -> None:
        nonlocal done
        n = i
        while time.monotonic() < deadline:
            key = keys[n % SESSIONS]
            if op == "get":
                assert await store.get(key) == PAYLOAD
            elif op == "update":
                assert await store.update(key, PAYLOAD, 3600)
            else:
                assert await store.create(record_key("ns", new_session_id()), PAYLOAD, 3600)
            n += WORKERS
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(WORKERS)))
    rate = done / (time.monotonic() - started)
    async with store.engine.begin() as conn:
        await conn.run_sync(store.table.drop)
    await store.close()
    return rate


async def main(urls: list[str]) -> None:
    for url in urls:
        name = sql.sa.make_url(url).get_backend_name()
        for op in ("get", "update", "create"):
            best = {True: 0.0, False: 0.0}
            for _ in range(ROUNDS):
                for batched in (True, False):
                    best[batched] = max(best[batched], await run(url, op, batched))
            print(
                f"{name:10} {op:6} batched {best[True]:8.0f}/s  one by one {best[False]:8.0f}/s"
                f"  ratio {best[True] / best[False]:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
