"""Application hosts whose clocks disagree.

A session's creation and last-access times come from the clock of the host that wrote it;
another host whose clock runs behind sees them in the future. Within
``clock_skew_tolerance`` such a session opens; beyond it, it is refused (a fresh session)
and the skew is logged once per process. The database stores expire rows on the
database's own clock, so a host whose clock runs fast does not purge live sessions.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

import aiohttp_sessionkit.session as session_module
from aiohttp_sessionkit import ConfigurationError, MemoryStore, setup
from aiohttp_sessionkit.stores import sql as sql_module
from tests.conftest import JWT_STORE_KINDS, FakeClock, StoreFactory
from tests.stores.test_contract import COOKIE_WIRE, build_app, client_for, login, read

#: How far ahead the writing host's clock runs.
AHEAD = 120


@pytest.mark.parametrize(("tolerance", "opens"), [(300, True), (None, False)])
async def test_session_from_a_host_120_s_ahead_opens_only_within_the_clock_skew_tolerance(
    aiohttp_client: Any,
    store_factory: StoreFactory,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tolerance: int | None,
    opens: bool,
) -> None:
    if store_factory.kind in JWT_STORE_KINDS:
        pytest.skip("a JWT issued in the future fails its iat check first: JWTStore(leeway=...)")
    options = {} if tolerance is None else {"clock_skew_tolerance": tolerance}
    fast_host = await client_for(aiohttp_client, build_app(store_factory(), COOKIE_WIRE, **options))
    this_host = await client_for(aiohttp_client, build_app(store_factory(), COOKIE_WIRE, **options))
    clock.advance(AHEAD)  # the fake clock is the process's: the other host is "now + 120 s"
    token = await login(fast_host, COOKIE_WIRE, user="alice")
    clock.advance(-AHEAD)
    monkeypatch.setattr(session_module, "_skew_reported", False)  # a fresh process

    with caplog.at_level(logging.WARNING, logger="aiohttp_sessionkit"):
        bodies = [await read(this_host, COOKIE_WIRE, token) for _ in range(3)]

    skew_lines = [r for r in caplog.records if "clock_skew_tolerance" in r.getMessage()]
    if opens:
        assert bodies == [{"data": {"user": "alice"}, "new": False}] * 3
        assert skew_lines == []
    else:
        assert bodies == [{"data": {}, "new": True}] * 3
        # Once per process, not once per request, and nothing that names the session.
        assert len(skew_lines) == 1
        message = skew_lines[0].getMessage()
        assert token not in message and token[:8] not in message
        assert f"{AHEAD} s in the future" in message


@pytest.mark.parametrize("tolerance", [-1, 3601, 1.5, "60", True, None])
def test_clock_skew_tolerance_out_of_range_fails_at_setup(tolerance: object) -> None:
    from aiohttp import web

    with pytest.raises(ConfigurationError, match="clock_skew_tolerance"):
        setup(web.Application(), MemoryStore(), clock_skew_tolerance=tolerance)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "server_store_factory", ["postgres", "sql-sqlite", "sql-mariadb", "sql-postgres"], indirect=True
)
async def test_purge_on_a_host_31_minutes_fast_keeps_live_sessions(
    aiohttp_client: Any, server_store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await client_for(
        aiohttp_client, build_app(server_store_factory(), COOKIE_WIRE, idle_timeout=1800)
    )
    token = await login(client, COOKIE_WIRE, user="alice")

    # The other host: the same table, and an application clock 31 minutes fast (past the
    # 30-minute expiry of the row just written, by that clock).
    fast_store = server_store_factory()
    monkeypatch.setattr(sql_module, "_now_ms", lambda: time.time_ns() // 1_000_000 + 31 * 60_000)
    assert await fast_store.purge_expired() == 0

    assert (await read(client, COOKIE_WIRE, token))["data"] == {"user": "alice"}


class _OldRestoreStore(MemoryStore):
    """A store whose ``restore`` override predates ``clock_skew_tolerance``."""

    def restore(  # type: ignore[override]  # the older signature, on purpose
        self,
        payload: Any,
        serializer: Any,
        *,
        identity: str | None,
        idle_timeout: int,
        absolute_timeout: int,
    ) -> Any:
        self.restored = getattr(self, "restored", 0) + 1
        return super().restore(
            payload,
            serializer,
            identity=identity,
            idle_timeout=idle_timeout,
            absolute_timeout=absolute_timeout,
        )


async def test_restore_override_without_the_tolerance_argument_keeps_working(
    aiohttp_client: Any,
) -> None:
    store = _OldRestoreStore()
    client = await client_for(aiohttp_client, build_app(store, COOKIE_WIRE))
    token = await login(client, COOKIE_WIRE, user="alice")
    assert (await read(client, COOKIE_WIRE, token))["data"] == {"user": "alice"}
    assert store.restored == 1  # the read went through the override
