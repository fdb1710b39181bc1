"""A server store whose server is down when the application starts: the app starts anyway.

One documented behaviour for every server store: startup does not fail, routes that never
touch a session keep working, requests that need a session get 503, and the store
connects (and creates its table or index) on the first request after the server is back.
Every server store logs the outage once at startup, in the same words.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from aiohttp_sessionkit import StoreError
from aiohttp_sessionkit.stores.postgres import PostgresStore
from tests.conftest import StoreFactory
from tests.harness.servers import ServerHandle
from tests.stores.test_contract import COOKIE_WIRE, build_app, client_for
from tests.stores.test_faults import (  # noqa: F401 - `server` is a fixture
    DOWN_TIMEOUT,
    FAULT_KINDS,
    assert_recovered,
    assert_unavailable,
    server,
    stopped,
)

pytestmark = pytest.mark.slow


def startup_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "aiohttp_sessionkit" and "at startup" in record.getMessage()
    ]


@pytest.mark.parametrize("server_store_factory", FAULT_KINDS, indirect=True)
async def test_store_down_at_startup_starts_anyway_and_connects_once_the_server_is_back(
    aiohttp_client: Any,
    server_store_factory: StoreFactory,
    server: ServerHandle,  # noqa: F811 - the fixture imported above
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aiohttp_sessionkit")
    # Each factory uses a table, collection or key prefix of its own, so the store below
    # has never created anything on the server: its setup must happen after the outage.
    async with stopped(server):
        # Startup runs store.open() with the server down; before the fix, PostgreSQL and
        # MongoDB stores raised StoreUnavailable here and the application never started.
        client = await client_for(
            aiohttp_client,
            build_app(server_store_factory(), COOKIE_WIRE, store_timeout=DOWN_TIMEOUT),
        )
        response = await client.get("/untouched")
        assert response.status == 200
        assert await response.text() == "plain"
        assert_unavailable(await client.post("/incr"))
        assert_unavailable(await client.post("/set/user/alice"))
        warnings = startup_warnings(caplog)
        # One line, in the same words, whatever the store (Redis logged nothing before).
        assert len(warnings) == 1, warnings
        assert "cannot reach its server at startup" in warnings[0]
        assert "starting anyway" in warnings[0]
    # The same application, never restarted, now saves and loads sessions.
    await assert_recovered(client)
    assert len(startup_warnings(caplog)) <= 1  # logged at startup only, not per request


async def test_a_missing_table_without_create_table_still_fails_startup(
    postgres_server: ServerHandle,
) -> None:
    # Misconfiguration is not an outage: it must stop the application at startup.
    store = PostgresStore(postgres_server.url, table="no_such_table_here", create_table=False)
    try:
        with pytest.raises(StoreError, match="does not exist"):
            await store.open()
    finally:
        await store.close()
