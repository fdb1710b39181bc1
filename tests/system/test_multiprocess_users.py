"""A user's sessions across three OS processes sharing Redis Cluster or PostgreSQL.

The index is one record per user, written by compare-and-swap from every process: logins
racing on three processes must all land in it, and ending a user's sessions from one
process must end them in all, even while other processes are still writing to them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from tests.harness.cluster_servers import RedisClusterServers
from tests.system.test_multiprocess import (  # noqa: F401 - http: a fixture used below
    PROCESSES,
    AppProcesses,
    call,
    http,
)

pytestmark = pytest.mark.slow

LOGINS = 12


@pytest.fixture(scope="module", params=["redis-cluster", "postgres"])
def user_apps(request: pytest.FixtureRequest) -> Iterator[AppProcesses]:
    """The processes of test_multiprocess.py, with sessions bound to users (``--users``)."""
    name = f"mpu_{uuid.uuid4().hex[:8]}"
    if request.param == "redis-cluster":
        servers: RedisClusterServers = request.getfixturevalue("redis_cluster_servers")
        servers.wait_healthy()
        target = ",".join(f"{host}:{port}" for host, port in servers.startup_nodes)
        processes = AppProcesses("redis-cluster", target, name + ":", "--users")
    else:
        target = request.getfixturevalue("postgres_server").url
        processes = AppProcesses("postgres", target, name, "--users")
    try:
        processes.wait_ready()
        yield processes
    finally:
        processes.stop()


async def test_logins_racing_on_three_processes_all_land_and_one_process_ends_them_all(
    user_apps: AppProcesses,
    http: aiohttp.ClientSession,  # noqa: F811
) -> None:
    apps = user_apps
    logins = await asyncio.gather(
        *(call(http, "POST", apps.url(i, "/login/alice"), None) for i in range(LOGINS))
    )
    cookies = [issued for status, _, issued, _ in logins if status == 200]
    assert len(cookies) == LOGINS and None not in cookies
    await call(http, "POST", apps.url(0, "/login/bob"), None)
    for index in range(PROCESSES):
        status, count, _, _ = await call(http, "GET", apps.url(index, "/sessions/alice"), None)
        assert (status, count) == (200, LOGINS)

    # Writes of alice's sessions keep arriving on every process while one process ends them.
    writes = [call(http, "POST", apps.url(i, f"/mark/{i}"), cookies[i % LOGINS]) for i in range(60)]
    ending = call(http, "POST", apps.url(1, "/end-all/alice"), None)
    async with asyncio.timeout(120):
        answers = await asyncio.gather(*writes[:30], ending, *writes[30:])
    assert {status for status, _, _, _ in answers} == {200}
    assert answers[30][1] == LOGINS  # the writes changed no binding: all twelve were there

    for cookie in cookies:  # no token of alice opens anywhere, none came back
        for index in range(PROCESSES):
            status, body, _, _ = await call(http, "GET", apps.url(index, "/read"), cookie)
            assert body == {"data": {}, "new": True}
    for index in range(PROCESSES):
        _, alice, _, _ = await call(http, "GET", apps.url(index, "/sessions/alice"), None)
        _, bob, _, _ = await call(http, "GET", apps.url(index, "/sessions/bob"), None)
        assert (alice, bob) == (0, 1)
