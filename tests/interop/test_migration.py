"""Switching a live site from aiohttp-session: end to end through ``setup(..., legacy=...)``.

The "old site" is a real aiohttp-session 2.12 app; the "new site" is ours with a legacy
reader. A client of the old site visits the new one and must keep its session, move to
our format on that response, and never need the legacy format again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any, ClassVar

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from aiohttp_session.redis_storage import RedisStorage

from aiohttp_sessionkit import (
    AbstractLegacyReader,
    AbstractStore,
    LegacySession,
    RedisStore,
    get_session,
)
from aiohttp_sessionkit.legacy import AiohttpSessionCookie, AiohttpSessionRedis
from tests.conftest import FakeClock, StoreFactory, set_cookies
from tests.interop.test_legacy import (  # noqa: F401 - fixtures
    RAW_KEY,
    Backend,
    OldAppFactory,
    backend,
    make_old_app,
    mc_client,
    redis_client,
)
from tests.stores.test_contract import (
    COOKIE,
    COOKIE_WIRE,
    build_app,
    client_for,
    cookie_value,
    with_cookie,
)

pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web.NotAppKeyWarning")

OUR_STORES = pytest.mark.parametrize("store_factory", ["memory", "cookie", "redis"], indirect=True)


class Counting(AbstractLegacyReader):
    """A real reader, with its calls counted."""

    local: ClassVar[bool] = False

    def __init__(self, inner: AbstractLegacyReader) -> None:
        self.inner = inner
        object.__setattr__(self, "local", inner.local)
        self.loads = 0
        self.deletes = 0

    async def load(self, token: str, *, namespace: str) -> LegacySession | None:
        self.loads += 1
        return await self.inner.load(token, namespace=namespace)

    async def delete(self, token: str, *, namespace: str) -> None:
        self.deletes += 1
        await self.inner.delete(token, namespace=namespace)


def new_site(store: AbstractStore, **options: Any) -> web.Application:
    """The contract tests' app, plus /meta: the session's times."""
    app = build_app(store, COOKIE_WIRE, **options)

    async def meta(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response(
            {"created": session.created, "last_access": session.last_access, "new": session.new}
        )

    app.router.add_get("/meta", meta)
    return app


async def get(client: Any, path: str, cookie: str) -> Any:
    response = await client.get(path, headers=with_cookie(cookie))
    assert response.status == 200, await response.text()
    return response


@OUR_STORES
async def test_a_cookie_session_moves_over_on_the_first_visit(
    aiohttp_client: Any,
    make_old_app: OldAppFactory,  # noqa: F811
    store_factory: StoreFactory,
) -> None:
    old = await make_old_app(EncryptedCookieStorage(RAW_KEY))
    # The harder case: a token with base64 padding, which aiohttp sent quoted and the
    # browser returns quoted. (Of six sizes in a row, some always are.)
    for size in range(6):
        legacy_cookie = await old.write(user="alice", cart=["book"], pad="x" * 16 * size)
        if legacy_cookie.startswith('"'):
            break
    assert legacy_cookie.startswith('"')
    data = {"user": "alice", "cart": ["book"], "pad": "x" * 16 * size}
    reader = Counting(AiohttpSessionCookie(RAW_KEY))
    client = await client_for(aiohttp_client, new_site(store_factory(), legacy=reader))

    response = await get(client, "/read", legacy_cookie)
    assert await response.json() == {"data": data, "new": False}
    ours = cookie_value(response)  # the client moves to our format on this response
    assert ours and ours != legacy_cookie.strip('"')
    assert response.headers["Cache-Control"] == "private"
    assert reader.loads == 1

    # From now on the client presents our cookie: it opens in our store, and the legacy
    # reader is never asked again.
    for _ in range(3):
        response = await get(client, "/read", ours)
        assert await response.json() == {"data": data, "new": False}
        assert COOKIE not in set_cookies(response)  # a read writes nothing
    response = await client.post("/set/theme/dark", headers=with_cookie(ours))
    ours = cookie_value(response) if COOKIE in set_cookies(response) else ours
    body = await (await get(client, "/read", ours)).json()
    assert body["data"] == {**data, "theme": "dark"}
    assert reader.loads == 1


@OUR_STORES
async def test_a_server_session_moves_over_and_its_old_record_is_deleted(
    aiohttp_client: Any,
    make_old_app: OldAppFactory,  # noqa: F811
    backend: Backend,  # noqa: F811 - aiohttp-session's RedisStorage, then MemcachedStorage
    store_factory: StoreFactory,
) -> None:
    old = await make_old_app(backend.storage())
    legacy_cookie = await old.write(user="alice")
    record = f"{COOKIE}_{legacy_cookie}"
    assert await backend.exists(record)
    reader = Counting(backend.reader())
    client = await client_for(aiohttp_client, new_site(store_factory(), legacy=reader))

    response = await get(client, "/read", legacy_cookie)
    assert (await response.json())["data"] == {"user": "alice"}
    ours = cookie_value(response)
    assert ours != legacy_cookie
    assert not await backend.exists(record)  # deleted once our save succeeded
    assert reader.deletes == 1

    assert (await (await get(client, "/read", ours)).json())["data"] == {"user": "alice"}
    # A copy of the old cookie (another tab, an attacker) opens nothing any more.
    response = await get(client, "/read", legacy_cookie)
    assert await response.json() == {"data": {}, "new": True}
    assert COOKIE not in set_cookies(response)
    assert reader.loads == 2  # the replay asked the reader (and found nothing); ours never


async def test_the_migrated_session_keeps_the_old_times_for_its_timeouts(
    aiohttp_client: Any,
    make_old_app: OldAppFactory,  # noqa: F811
    redis_client: aioredis.Redis,  # noqa: F811
    clock: FakeClock,
) -> None:
    old = await make_old_app(RedisStorage(redis_client))
    legacy_cookie = await old.write(user="alice")
    # aiohttp-session's "created", the time of its last write; the fake clock starts there.
    record = await redis_client.get(f"{COOKIE}_{legacy_cookie}")
    assert record is not None
    written = clock.now = json.loads(record)["created"]
    from aiohttp_sessionkit import MemoryStore

    app = new_site(MemoryStore(), legacy=AiohttpSessionRedis(redis_client), absolute_timeout=7200)
    client = await client_for(aiohttp_client, app)
    clock.advance(600)
    response = await get(client, "/meta", legacy_cookie)
    body = await response.json()
    assert body["created"] == written  # the absolute timeout counts from the old last write
    ours = cookie_value(response)
    clock.advance(7200 - 600 - 1)
    assert (await (await get(client, "/read", ours)).json())["data"] == {"user": "alice"}
    clock.advance(2)  # 7201 s after the last write on the old site
    assert (await (await get(client, "/read", ours)).json()) == {"data": {}, "new": True}


async def test_a_legacy_session_past_our_absolute_timeout_is_not_moved_over(
    aiohttp_client: Any,
    make_old_app: OldAppFactory,  # noqa: F811
    redis_client: aioredis.Redis,  # noqa: F811
    clock: FakeClock,
) -> None:
    old = await make_old_app(RedisStorage(redis_client))  # no max_age: valid forever there
    legacy_cookie = await old.write(user="alice")
    record = await redis_client.get(f"{COOKIE}_{legacy_cookie}")
    assert record is not None
    clock.now = json.loads(record)["created"]
    from aiohttp_sessionkit import MemoryStore

    store = MemoryStore()
    app = new_site(store, legacy=AiohttpSessionRedis(redis_client), absolute_timeout=7200)
    client = await client_for(aiohttp_client, app)
    clock.advance(7201)
    response = await get(client, "/read", legacy_cookie)
    assert await response.json() == {"data": {}, "new": True}
    assert COOKIE not in set_cookies(response)  # nothing saved only to expire at once
    assert len(store) == 0


async def test_bad_legacy_cookies_give_a_fresh_session_never_a_500(
    aiohttp_client: Any,
    make_old_app: OldAppFactory,  # noqa: F811
    redis_client: aioredis.Redis,  # noqa: F811
    clock: FakeClock,
) -> None:
    from aiohttp_sessionkit import MemoryStore

    expiring = await make_old_app(EncryptedCookieStorage(RAW_KEY, max_age=60))
    expired = await expiring.write(user="alice")
    other_key = await (await make_old_app(EncryptedCookieStorage(os.urandom(32)))).write(u="x")
    good = (await expiring.write(user="bob")).strip('"')
    tampered = good[:70] + ("B" if good[70] == "A" else "A") + good[71:]
    redis_old = await make_old_app(RedisStorage(redis_client))
    logged_out = await redis_old.write(user="carol")
    await redis_old.logout(logged_out)
    readers = [
        AiohttpSessionCookie(RAW_KEY, max_age=60),
        AiohttpSessionRedis(redis_client, max_age=60),
    ]
    client = await client_for(aiohttp_client, new_site(MemoryStore(), legacy=readers))
    clock.advance(120)  # well past max_age, whatever second the cookies were written in
    for value in [
        expired,
        other_key,
        tampered,
        logged_out,
        os.urandom(16).hex(),
        "garbage",
        '"quoted garbage"',
        "gAAAAA" + "A" * 200,
        "x" * 3000,
    ]:
        response = await client.get("/read", headers=with_cookie(value))
        assert response.status == 200, value
        assert await response.json() == {"data": {}, "new": True}, value
        assert COOKIE not in set_cookies(response)


async def test_logging_out_on_the_first_visit_deletes_the_old_record(
    aiohttp_client: Any,
    make_old_app: OldAppFactory,  # noqa: F811
    redis_client: aioredis.Redis,  # noqa: F811
) -> None:
    from aiohttp_sessionkit import MemoryStore

    old = await make_old_app(RedisStorage(redis_client))
    legacy_cookie = await old.write(user="alice")
    client = await client_for(
        aiohttp_client, new_site(MemoryStore(), legacy=AiohttpSessionRedis(redis_client))
    )
    response = await client.post("/logout", headers=with_cookie(legacy_cookie))
    assert response.status == 200
    assert set_cookies(response)[COOKIE]["max-age"] == "0"
    assert not await redis_client.exists(f"{COOKIE}_{legacy_cookie}")
    assert await (await get(client, "/read", legacy_cookie)).json() == {"data": {}, "new": True}


async def test_old_record_stays_when_our_store_cannot_save_it(
    aiohttp_client: Any,
    make_old_app: OldAppFactory,  # noqa: F811
    redis_client: aioredis.Redis,  # noqa: F811
) -> None:
    old = await make_old_app(RedisStorage(redis_client))
    legacy_cookie = await old.write(user="alice")
    down = RedisStore("redis://127.0.0.1:1/0")  # nothing listens: every save fails
    app = new_site(down, legacy=AiohttpSessionRedis(redis_client), store_timeout=2.0)
    client = await client_for(aiohttp_client, app)
    response = await client.get("/read", headers=with_cookie(legacy_cookie))
    assert response.status == 503
    assert COOKIE not in set_cookies(response)
    # Nothing was moved, so nothing was lost: the old record is still there to retry.
    assert await redis_client.exists(f"{COOKIE}_{legacy_cookie}")


async def test_legacy_server_down_affects_only_legacy_shaped_cookies(
    aiohttp_client: Any,
    make_old_app: OldAppFactory,  # noqa: F811
) -> None:
    from aiohttp_sessionkit import MemoryStore

    reader = Counting(AiohttpSessionRedis("redis://127.0.0.1:1/0"))
    client = await client_for(aiohttp_client, new_site(MemoryStore(), legacy=reader))
    response = await client.post("/set/user/alice")
    ours = cookie_value(response)
    # Our own sessions never reach the reader, so its outage does not touch them.
    assert (await (await get(client, "/read", ours)).json())["data"] == {"user": "alice"}
    assert reader.loads == 0
    # A cookie shaped like an aiohttp-session key needs the old server: 503, as for a store.
    response = await client.get("/read", headers=with_cookie(os.urandom(16).hex()))
    assert response.status == 503
    # Anything else is refused by the reader without a round trip.
    response = await client.get("/read", headers=with_cookie("not-a-legacy-key"))
    assert response.status == 200
    await reader.inner.close()


@pytest.mark.parametrize("old_storage", ["cookie", "redis"])
async def test_users_logged_in_with_aiohttp_security_stay_logged_in(
    aiohttp_client: Any,
    make_old_app: OldAppFactory,  # noqa: F811
    redis_client: aioredis.Redis,  # noqa: F811
    old_storage: str,
) -> None:
    import aiohttp_security

    from aiohttp_sessionkit import MemoryStore
    from tests.interop.test_security_policy import Permissions, security_app

    storage: Any
    reader: AbstractLegacyReader
    if old_storage == "cookie":
        storage, reader = EncryptedCookieStorage(RAW_KEY), AiohttpSessionCookie(RAW_KEY)
    else:
        storage, reader = RedisStorage(redis_client), AiohttpSessionRedis(redis_client)

    # The old site: aiohttp-session + aiohttp-security's own SessionIdentityPolicy.
    async def old_login(request: web.Request) -> web.Response:
        response = web.HTTPFound("/read")
        await aiohttp_security.remember(request, response, "alice")
        raise response

    def configure(app: web.Application) -> None:
        aiohttp_security.setup(app, aiohttp_security.SessionIdentityPolicy(), Permissions())
        app.router.add_post("/login", old_login)

    old = await make_old_app(storage, configure)
    response = await old.client.post("/login", allow_redirects=False)
    assert response.status == 302
    legacy_cookie = response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]

    # The new site: our sessions and policy, same session key; nobody has to log in again.
    client = await client_for(aiohttp_client, security_app(MemoryStore(), legacy=reader))
    response = await client.get("/me", headers=with_cookie(legacy_cookie))
    assert response.status == 200
    assert await response.text() == "alice"
    ours = cookie_value(response)
    assert await (await client.get("/me", headers=with_cookie(ours))).text() == "alice"
    assert (await client.post("/write", headers=with_cookie(ours))).status == 200


# -- a legacy cookie migrates at most once ------------------------------------------------------


async def test_a_replayed_legacy_cookie_does_not_reopen_after_migration_and_logout(
    aiohttp_client: Any,
    make_old_app: OldAppFactory,  # noqa: F811
    revocable_store_factory: StoreFactory,
) -> None:
    """aiohttp-session's cookie cannot be deleted at its source: a copy taken before the
    switch must not open again once it moved over (the store remembers it), however it is
    replayed, and a replay never mints a record of its own."""
    old = await make_old_app(EncryptedCookieStorage(RAW_KEY, max_age=3600))
    legacy_cookie = await old.write(user="alice")
    reader = AiohttpSessionCookie(RAW_KEY, max_age=3600)
    client = await client_for(aiohttp_client, new_site(revocable_store_factory(), legacy=reader))

    response = await get(client, "/read", legacy_cookie)
    assert (await response.json())["data"] == {"user": "alice"}
    ours = cookie_value(response)
    response = await client.post("/logout", headers=with_cookie(ours))
    assert response.status == 200
    assert await (await get(client, "/read", ours)).json() == {"data": {}, "new": True}

    for method, path in [("GET", "/read"), ("GET", "/read"), ("POST", "/set/theme/dark")]:
        response = await client.request(method, path, headers=with_cookie(legacy_cookie))
        assert response.status == 200
        if path == "/read":
            assert await response.json() == {"data": {}, "new": True}
            assert COOKIE not in set_cookies(response)  # no record, no cookie
        else:  # a write starts a fresh session: alice's data never comes back
            fresh = cookie_value(response)
            assert (await (await get(client, "/read", fresh)).json())["data"] == {"theme": "dark"}


async def test_concurrent_replays_of_one_legacy_cookie_migrate_it_once(
    aiohttp_client: Any,
    make_old_app: OldAppFactory,  # noqa: F811
    revocable_store_factory: StoreFactory,
) -> None:
    old = await make_old_app(EncryptedCookieStorage(RAW_KEY))
    legacy_cookie = await old.write(user="alice")
    client = await client_for(
        aiohttp_client,
        new_site(revocable_store_factory(), legacy=AiohttpSessionCookie(RAW_KEY)),
    )
    responses = await asyncio.gather(
        *(client.get("/read", headers=with_cookie(legacy_cookie)) for _ in range(3))
    )
    assert [r.status for r in responses] == [200, 200, 200]
    bodies = [await r.json() for r in responses]
    migrated = [r for r, body in zip(responses, bodies, strict=True) if not body["new"]]
    assert len(migrated) == 1, bodies  # three replays, one record
    assert bodies.count({"data": {}, "new": True}) == 2
    assert sum(COOKIE in set_cookies(r) for r in responses) == 1
    ours = cookie_value(migrated[0])
    assert (await (await get(client, "/read", ours)).json())["data"] == {"user": "alice"}


async def test_a_migration_that_ends_empty_creates_no_record(
    aiohttp_client: Any,
    make_old_app: OldAppFactory,  # noqa: F811
) -> None:
    from aiohttp_sessionkit import MemoryStore

    old = await make_old_app(EncryptedCookieStorage(RAW_KEY))
    legacy_cookie = await old.write(user="alice")
    store = MemoryStore()
    client = await client_for(aiohttp_client, new_site(store, legacy=AiohttpSessionCookie(RAW_KEY)))
    response = await client.post("/logout", headers=with_cookie(legacy_cookie))
    assert response.status == 200
    assert len(store) == 1  # the marker of the migrated token, no session
    assert await (await get(client, "/read", legacy_cookie)).json() == {"data": {}, "new": True}
    assert len(store) == 1


# -- keys a JWT store cannot carry ----------------------------------------------------------------


@pytest.mark.parametrize("store_factory", ["jwt", "jwt-revoke"], indirect=True)
@pytest.mark.parametrize("claim", ["exp", "iss", "aud", "jti", "nbf", "iat", "_sk"])
async def test_a_legacy_session_holding_a_reserved_claim_name_starts_afresh_never_a_500(
    aiohttp_client: Any,
    make_old_app: OldAppFactory,  # noqa: F811
    store_factory: StoreFactory,
    caplog: pytest.LogCaptureFixture,
    claim: str,
) -> None:
    old = await make_old_app(EncryptedCookieStorage(RAW_KEY))
    secret_value = "value-that-must-not-be-logged"
    legacy_cookie = await old.write(user="alice", **{claim: secret_value})
    client = await client_for(
        aiohttp_client, new_site(store_factory(), legacy=AiohttpSessionCookie(RAW_KEY))
    )
    caplog.set_level(logging.DEBUG, logger="aiohttp_sessionkit")
    for _ in range(2):  # every request, not only the first
        response = await get(client, "/read", legacy_cookie)
        assert await response.json() == {"data": {}, "new": True}
        assert COOKIE not in set_cookies(response)
    response = await client.post("/set/user/bob", headers=with_cookie(legacy_cookie))
    assert response.status == 200
    ours = cookie_value(response)
    assert (await (await get(client, "/read", ours)).json())["data"] == {"user": "bob"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all(repr(claim) in w and "'user'" not in w for w in warnings)
    assert secret_value not in caplog.text and legacy_cookie.strip('"')[:20] not in caplog.text
