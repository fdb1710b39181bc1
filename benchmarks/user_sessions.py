"""Time ``user_sessions()`` over one user's N sessions.

Run from the repository root: ``PYTHONPATH=. python benchmarks/user_sessions.py``.

Signs one user in N times through a real application (so every session is saved and bound
by the session layer, as in production), then lists the user's sessions ``--repeat`` times
and prints the median and the slowest. ``--store memory`` (default), ``redis`` or
``postgres``: the last two start a throwaway server of the test harness on a free
loopback port (the driver needs ``ServerStore.replace``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient, TestServer

from aiohttp_sessionkit import AbstractStore, MemoryStore, new_session, setup, user_sessions


@contextlib.contextmanager
def store_for(kind: str) -> Iterator[AbstractStore]:
    if kind == "memory":
        yield MemoryStore(max_entries=1_000_000)
        return
    if kind == "redis":
        from aiohttp_sessionkit.stores.redis import RedisStore
        from tests.harness.servers import RedisServer

        with RedisServer() as redis:
            yield RedisStore(redis.url, key_prefix="bench-users:")
        return
    if kind == "postgres":
        from aiohttp_sessionkit.stores.postgres import PostgresStore
        from tests.harness.servers import PostgresServer

        with PostgresServer() as postgres:
            yield PostgresStore(postgres.url, table="bench_users")
        return
    raise SystemExit(f"--store: memory, redis or postgres, not {kind!r}")


async def measure(store: AbstractStore, count: int, repeat: int) -> list[float]:
    app = web.Application()
    setup(app, store, user_key="user_id", record_client=True)

    async def login(request: web.Request) -> web.Response:
        (await new_session(request))["user_id"] = "alice"
        return web.Response(text="ok")

    app.router.add_post("/login", login)
    client: TestClient[Any, Any] = TestClient(TestServer(app), cookie_jar=DummyCookieJar())
    await client.start_server()
    try:
        for _ in range(count):
            assert (await client.post("/login")).status == 200
        timings = []
        for _ in range(repeat):
            start = time.perf_counter()
            listed = await user_sessions(app, "alice")
            timings.append(time.perf_counter() - start)
            assert len(listed) == count, len(listed)
        return timings
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="memory")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with store_for(args.store) as store:
        timings = asyncio.run(measure(store, args.sessions, args.repeat))
    print(
        f"{args.store}: listing {args.sessions} sessions of one user: median "
        f"{statistics.median(timings) * 1000:.1f} ms, slowest {max(timings) * 1000:.1f} ms "
        f"({args.repeat} runs)"
    )


if __name__ == "__main__":
    main()
