"""The same app in three OS processes on one shared store; every client's requests spread over all.

This is what a deployment behind a load balancer looks like: nothing about a session may
live in one process. Counts must come out exact after concurrent increments, and a logout
must be seen by every process at once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.harness import REPO_ROOT
from tests.harness.cluster_servers import RedisClusterServers
from tests.harness.servers import HOST, free_port, port_accepts

pytestmark = pytest.mark.slow

PROCESSES = 3
USERS = 60
INCREMENTS = 30
COOKIE = "AIOHTTP_SESSION"
APP = REPO_ROOT / "tests" / "harness" / "multiprocess_app.py"
ROOT = REPO_ROOT


class AppProcesses:
    """``count`` copies (``PROCESSES`` unless told) of tests/harness/multiprocess_app.py, each
    on its own port."""

    def __init__(
        self, store: str, target: str, name: str, *extra: str, count: int = PROCESSES
    ) -> None:
        self.ports = [free_port() for _ in range(count)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(APP),
                    "--port",
                    str(port),
                    "--store",
                    store,
                    "--target",
                    target,
                    "--name",
                    name,
                    *extra,
                ],
                env=env,
                stdin=subprocess.DEVNULL,
            )
            for port in self.ports
        ]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for proc, port in zip(self.procs, self.ports, strict=True):
            while not port_accepts(port):
                assert proc.poll() is None, f"app process exited with {proc.returncode}"
                assert time.monotonic() < deadline, "app process did not listen"
                time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def url(self, index: int, path: str) -> str:
        return f"http://{HOST}:{self.ports[index % len(self.ports)]}{path}"


MULTIPROCESS_KINDS = ["redis-cluster", "postgres"]


def start_apps(request: pytest.FixtureRequest, kind: str) -> AppProcesses:
    """``PROCESSES`` app processes on a fresh namespace of the ``kind`` store."""
    name = f"mp_{uuid.uuid4().hex[:8]}"
    if kind == "redis-cluster":
        servers: RedisClusterServers = request.getfixturevalue("redis_cluster_servers")
        servers.wait_healthy()
        target = ",".join(f"{host}:{port}" for host, port in servers.startup_nodes)
        return AppProcesses("redis-cluster", target, name + ":")
    target = request.getfixturevalue("postgres_server").url
    return AppProcesses("postgres", target, name)


@pytest.fixture(scope="module", params=MULTIPROCESS_KINDS)
def apps(request: pytest.FixtureRequest) -> Iterator[AppProcesses]:
    processes = start_apps(request, request.param)
    try:
        processes.wait_ready()
        yield processes
    finally:
        processes.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: str, cookie: str | None
) -> tuple[int, Any, str | None, str]:
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    async with http.request(method, url, headers=headers) as response:
        body = await response.json() if response.content_type == "application/json" else None
        issued = response.cookies[COOKIE].value if COOKIE in response.cookies else None
        return response.status, body, issued, response.headers["X-Pid"]


async def test_counts_are_exact_when_every_request_goes_to_another_process(
    apps: AppProcesses, http: aiohttp.ClientSession
) -> None:
    pids: set[str] = set()

    async def user(u: int) -> int:
        cookie: str | None = None
        for step in range(INCREMENTS):
            status, body, issued, pid = await call(
                http, "POST", apps.url(u + step, "/incr"), cookie
            )
            assert (status, body) == (200, step + 1)
            cookie = cookie or issued
            pids.add(pid)
        status, body, _, _ = await call(http, "GET", apps.url(u + 1, "/read"), cookie)
        assert status == 200
        count: int = body["data"]["n"]
        return count

    async with asyncio.timeout(300):
        counts = await asyncio.gather(*(user(u) for u in range(USERS)))
    assert counts == [INCREMENTS] * USERS
    assert len(pids) == PROCESSES  # three processes really served


async def test_a_logout_is_seen_by_every_process_at_once(
    apps: AppProcesses, http: aiohttp.ClientSession
) -> None:
    async def user(u: int) -> None:
        status, _, cookie, _ = await call(http, "POST", apps.url(u, "/incr"), None)
        assert status == 200 and cookie is not None
        for other in range(PROCESSES):  # every process sees the session
            status, body, _, _ = await call(http, "GET", apps.url(u + other, "/read"), cookie)
            assert body == {"data": {"n": 1}, "new": False}
        status, _, _, _ = await call(http, "POST", apps.url(u, "/logout"), cookie)
        assert status == 200
        for other in range(1, PROCESSES):  # right after, the others no longer do
            status, body, _, _ = await call(http, "GET", apps.url(u + other, "/read"), cookie)
            assert body == {"data": {}, "new": True}

    async with asyncio.timeout(300):
        await asyncio.gather(*(user(u) for u in range(USERS)))


async def test_a_logout_under_concurrent_writes_from_other_processes_is_never_undone(
    apps: AppProcesses, http: aiohttp.ClientSession
) -> None:
    status, _, cookie, _ = await call(http, "POST", apps.url(0, "/incr"), None)
    assert status == 200 and cookie is not None
    marks = 300
    jobs = [call(http, "POST", apps.url(i, f"/mark/{i}"), cookie) for i in range(marks // 2)]
    jobs.append(call(http, "POST", apps.url(0, "/logout"), cookie))
    jobs += [
        call(http, "POST", apps.url(i, f"/mark/{i}"), cookie) for i in range(marks // 2, marks)
    ]
    async with asyncio.timeout(300):
        answers = await asyncio.gather(*jobs)
    assert {status for status, _, _, _ in answers} == {200}
    for index in range(PROCESSES):
        status, body, _, _ = await call(http, "GET", apps.url(index, "/read"), cookie)
        assert body == {"data": {}, "new": True}


#: Concurrent requests on one session, and how many times the test repeats them.
CONCURRENT = 50
ROUNDS = 20


async def test_concurrent_changes_to_one_session_from_every_process_all_land(
    apps: AppProcesses, http: aiohttp.ClientSession
) -> None:
    """Each request sets its own key; all loaded the session before most saved (issue 24)."""
    for _ in range(ROUNDS):
        status, _, cookie, _ = await call(http, "POST", apps.url(0, "/incr"), None)
        assert status == 200 and cookie is not None
        async with asyncio.timeout(120):
            answers = await asyncio.gather(
                *(call(http, "POST", apps.url(i, f"/mark/{i}"), cookie) for i in range(CONCURRENT))
            )
        assert [status for status, _, _, _ in answers] == [200] * CONCURRENT
        assert len({pid for _, _, _, pid in answers}) == PROCESSES
        status, body, _, _ = await call(http, "GET", apps.url(1, "/read"), cookie)
        assert body == {"data": {"n": 1, **{f"k{i}": 1 for i in range(CONCURRENT)}}, "new": False}


@pytest.mark.parametrize("kind", MULTIPROCESS_KINDS)
async def test_an_app_process_killed_mid_save_leaves_the_last_complete_saves(
    request: pytest.FixtureRequest, http: aiohttp.ClientSession, kind: str
) -> None:
    processes = start_apps(request, kind)
    try:
        await asyncio.to_thread(processes.wait_ready)
        status, _, cookie, _ = await call(http, "POST", processes.url(0, "/incr"), None)
        assert status == 200 and cookie is not None

        async def mark(i: int) -> int | None:
            # Every third request goes to process 0, the one that gets killed.
            try:
                status, _, _, _ = await call(http, "POST", processes.url(i, f"/mark/{i}"), cookie)
            except aiohttp.ClientError:
                return None  # its process died under it: saved or not, nobody knows
            return status

        marks = 3 * CONCURRENT
        jobs = [asyncio.ensure_future(mark(i)) for i in range(marks)]
        await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
        processes.procs[0].kill()  # SIGKILL, while its saves are in flight
        async with asyncio.timeout(120):
            statuses = await asyncio.gather(*jobs)
        assert None in statuses[0::3], "process 0 was killed after all its requests ended"
        status, body, _, _ = await call(http, "GET", processes.url(1, "/read"), cookie)
        # The record opens (it is whole), with every save that answered 200 in it, maybe
        # some whose process died after writing, and nothing else.
        assert status == 200 and body["new"] is False
        data = body["data"]
        saved = {f"k{i}" for i, status in enumerate(statuses) if status == 200}
        assert saved <= set(data) - {"n"} <= {f"k{i}" for i in range(marks)}
        assert data["n"] == 1 and all(data[key] == 1 for key in data)
        assert {status for status in statuses[1::3] + statuses[2::3]} == {200}
    finally:
        await asyncio.to_thread(processes.stop)
