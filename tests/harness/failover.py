"""A steady stream of concurrent session reads and writes through a running app, recorded.

The failover tests start ``Traffic`` on an app, break the store's topology underneath it
(SIGKILL, SIGSTOP, a manual failover), and then check every answer it recorded: no 500, a
503 always with ``Retry-After`` and no cookie, within the time budget; every write the app
acknowledged accounted for, or counted as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientTimeout

from tests.conftest import set_cookies
from tests.stores.test_contract import COOKIE, with_cookie


@dataclass
class Answer:
    """One request of the stream."""

    user: int
    group: str  # what part of the store the user's session lives on (a shard, "all")
    path: str
    started: float
    finished: float
    status: int
    retry_after: str | None
    set_cookie: bool
    body: bytes

    @property
    def seconds(self) -> float:
        return self.finished - self.started


@dataclass
class User:
    """A simulated client with one session whose counter it increments."""

    index: int
    cookie: str
    group: str
    acked: int = 1  # the last count the app confirmed with a 200
    uncertain: int = 0  # writes answered 503 since then: they may or may not have landed
    lost_writes: int = 0  # acknowledged increments that later turned out missing
    lost_sessions: int = 0  # times the whole session was gone


@dataclass
class Traffic:
    """Users incrementing their own sessions, as fast as the app answers, until stopped."""

    client: Any
    group_of: Callable[[str], str]  # session cookie -> group
    users: int = 30
    answers: list[Answer] = field(default_factory=list)
    people: list[User] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        for index in range(self.users):
            response = await self.client.post("/incr")
            assert response.status == 200, await response.text()
            assert await response.json() == 1
            cookie = str(set_cookies(response)[COOKIE].value)
            self.people.append(User(index, cookie, self.group_of(cookie)))
        self._tasks = [asyncio.create_task(self._run(user)) for user in self.people]

    async def stop(self) -> None:
        self._stop.set()
        async with asyncio.timeout(120):
            await asyncio.gather(*self._tasks)

    def groups(self) -> set[str]:
        return {user.group for user in self.people}

    async def _run(self, user: User) -> None:
        while not self._stop.is_set():
            await self._incr(user)

    async def _incr(self, user: User) -> None:
        started = time.monotonic()
        response = await self.client.post(
            "/incr", headers=with_cookie(user.cookie), timeout=ClientTimeout(total=60)
        )
        body = await response.read()
        finished = time.monotonic()
        reissued = COOKIE in set_cookies(response)
        self.answers.append(
            Answer(
                user.index, user.group, "/incr", started, finished, response.status,
                response.headers.get("Retry-After"), "Set-Cookie" in response.headers, body,
            )
        )  # fmt: skip
        if response.status != 200:
            user.uncertain += 1
            return
        count = int(body)
        if reissued:
            # The store no longer had the session: the app started a new one.
            assert count == 1, (count, body)
            user.lost_sessions += 1
            user.lost_writes += user.acked
            user.cookie = str(set_cookies(response)[COOKIE].value)
            user.group = self.group_of(user.cookie)
        elif count <= user.acked:
            user.lost_writes += user.acked + 1 - count
        else:
            # A write answered 503 (the budget ran out) may still have reached the store.
            assert count - user.acked - 1 <= user.uncertain, (count, user.acked, user.uncertain)
        user.acked = count
        user.uncertain = 0

    # -- what was seen

    def statuses(self) -> dict[int, int]:
        seen: dict[int, int] = {}
        for answer in self.answers:
            seen[answer.status] = seen.get(answer.status, 0) + 1
        return seen

    def since(self, moment: float) -> list[Answer]:
        """Answers to requests sent after ``moment``."""
        return [a for a in self.answers if a.started >= moment]

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if a.finished >= start and a.started <= end]

    def first_success_after(self, group: str, moment: float) -> Answer | None:
        for answer in sorted(self.answers, key=lambda a: a.started):
            if answer.group == group and answer.started >= moment and answer.status == 200:
                return answer
        return None

    async def wait_success(self, group: str, after: float, seconds: float = 60.0) -> Answer:
        """Wait until a request for ``group`` that started after ``after`` succeeded."""
        async with asyncio.timeout(seconds):
            # Polls the record of answers, which the traffic tasks append to.
            while (found := self.first_success_after(group, after)) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return found

    def lost_writes(self) -> int:
        return sum(user.lost_writes for user in self.people)

    def lost_sessions(self) -> int:
        return sum(user.lost_sessions for user in self.people)


def check_answers(answers: list[Answer], *, budget: float) -> None:
    """No 500 ever; a 503 carries Retry-After and no cookie; nothing took past ``budget``."""
    bad = [a for a in answers if a.status not in (200, 503)]
    assert not bad, f"{len(bad)} answers other than 200/503, first: {bad[0]}"
    for answer in answers:
        if answer.status == 503:
            assert answer.retry_after is not None and answer.retry_after.isdigit(), answer
            assert not answer.set_cookie, answer
    slow = [a for a in answers if a.seconds > budget]
    assert not slow, (
        f"{len(slow)} answers slower than {budget} s, slowest {max(slow, key=lambda a: a.seconds)}"
    )


@contextlib.asynccontextmanager
async def running(traffic: Traffic) -> Any:
    await traffic.start()
    try:
        yield traffic
    finally:
        await traffic.stop()
