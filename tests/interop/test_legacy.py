"""The aiohttp-session readers, on cookies and records made by the real aiohttp-session.

Every legacy cookie and record below is produced in the same test by aiohttp-session
2.12 itself (its EncryptedCookieStorage, RedisStorage and MemcachedStorage behind a real
aiohttp app), then handed to our reader the way a browser would send it back.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import aiohttp_session
import aiomcache
import pytest
import redis.asyncio as aioredis
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from aiohttp_session.memcached_storage import MemcachedStorage
from aiohttp_session.redis_storage import RedisStorage
from cryptography.fernet import Fernet

from aiohttp_sessionkit import ConfigurationError, StoreUnavailable
from aiohttp_sessionkit.legacy import (
    AiohttpSessionCookie,
    AiohttpSessionMemcached,
    AiohttpSessionRedis,
)
from tests.conftest import FakeClock
from tests.harness import REPO_ROOT
from tests.harness.servers import ServerHandle

# aiohttp-session keys requests with plain strings, which aiohttp 3.14 warns about; under
# filterwarnings=error its app would answer 500.
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web.NotAppKeyWarning")

COOKIE = "AIOHTTP_SESSION"


def memcached_client(server: ServerHandle) -> aiomcache.Client:
    host, port = server.url.removeprefix("memcached://").rsplit(":", 1)
    return aiomcache.Client(host, int(port))


# -- driving the real aiohttp-session -------------------------------------------------------


class OldApp:
    """An app on aiohttp-session: writes sessions, returns the cookie a browser would send."""

    def __init__(self, client: TestClient[web.Request, web.Application]) -> None:
        self.client = client

    async def write(self, cookie: str | None = None, **values: Any) -> str:
        headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
        response = await self.client.post("/write", json=values, headers=headers)
        assert response.status == 200, await response.text()
        return sent_back(response)

    async def logout(self, cookie: str) -> None:
        response = await self.client.post("/logout", headers={"Cookie": f"{COOKIE}={cookie}"})
        assert response.status == 200

    async def read(self, cookie: str) -> dict[str, Any]:
        response = await self.client.get("/read", headers={"Cookie": f"{COOKIE}={cookie}"})
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


def sent_back(response: Any) -> str:
    """The cookie value exactly as a browser returns it (quotes included, if any)."""
    for header in response.headers.getall("Set-Cookie", []):
        name, _, rest = header.partition("=")
        if name == COOKIE:
            value: str = rest.split(";", 1)[0]
            return value
    raise AssertionError("no session cookie set")


def old_app(storage: aiohttp_session.AbstractStorage) -> web.Application:
    app = web.Application()
    aiohttp_session.setup(app, storage)

    async def write(request: web.Request) -> web.Response:
        session = await aiohttp_session.get_session(request)
        session.update(await request.json())
        return web.Response(text="ok")

    async def logout(request: web.Request) -> web.Response:
        (await aiohttp_session.get_session(request)).invalidate()
        return web.Response(text="bye")

    async def read(request: web.Request) -> web.Response:
        return web.json_response(dict(await aiohttp_session.get_session(request)))

    app.router.add_post("/write", write)
    app.router.add_post("/logout", logout)
    app.router.add_get("/read", read)
    return app


class OldAppFactory(Protocol):
    def __call__(
        self,
        storage: aiohttp_session.AbstractStorage,
        configure: Callable[[web.Application], None] | None = None,
    ) -> Awaitable[OldApp]: ...


@pytest.fixture
async def make_old_app() -> AsyncIterator[OldAppFactory]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(
        storage: aiohttp_session.AbstractStorage,
        configure: Callable[[web.Application], None] | None = None,
    ) -> OldApp:
        app = old_app(storage)
        if configure is not None:
            configure(app)  # more routes or middlewares, before the app starts
        client = TestClient(TestServer(app), cookie_jar=DummyCookieJar())
        await client.start_server()
        clients.append(client)
        return OldApp(client)

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def redis_client(redis_server: ServerHandle) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def mc_client(memcached_server: ServerHandle) -> AsyncIterator[aiomcache.Client]:
    client = memcached_client(memcached_server)
    yield client
    await client.close()


# -- EncryptedCookieStorage -----------------------------------------------------------------


RAW_KEY = os.urandom(32)


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(RAW_KEY, id="32-raw-bytes"),
        pytest.param(bytearray(RAW_KEY), id="bytearray"),
        pytest.param(base64.urlsafe_b64encode(RAW_KEY).decode(), id="base64-str"),
        pytest.param(Fernet(base64.urlsafe_b64encode(RAW_KEY)), id="Fernet"),
    ],
)
async def test_cookie_reader_opens_aiohttp_session_cookies_with_the_key_in_each_form(
    make_old_app: OldAppFactory, given: Any
) -> None:
    old = await make_old_app(EncryptedCookieStorage(given))
    reader = AiohttpSessionCookie(given)
    before = int(time.time())
    # Values of growing size: Fernet tokens of every length modulo 3 blocks, so some end in
    # base64 "=" padding and some do not.
    cookies = [
        await old.write(user="alice", pad="x" * 16 * n, nested={"cart": [1, 2]}) for n in range(6)
    ]
    # aiohttp quotes a cookie whose token ends in "=" padding; browsers send it back as is.
    assert any(c.startswith('"') for c in cookies) and any(not c.startswith('"') for c in cookies)
    for n, cookie in enumerate(cookies):
        legacy = await reader.load(cookie, namespace=COOKIE)
        assert legacy is not None
        assert legacy.data == {"user": "alice", "pad": "x" * 16 * n, "nested": {"cart": [1, 2]}}
        assert before <= legacy.created <= int(time.time())


async def test_cookie_reader_accepts_the_same_key_however_it_is_given(
    make_old_app: OldAppFactory,
) -> None:
    old = await make_old_app(EncryptedCookieStorage(RAW_KEY))
    cookie = await old.write(user="alice")
    for form in (base64.urlsafe_b64encode(RAW_KEY).decode(), [os.urandom(32), RAW_KEY]):
        legacy = await AiohttpSessionCookie(form).load(cookie, namespace=COOKIE)
        assert legacy is not None and legacy.data == {"user": "alice"}


async def test_cookie_reader_refuses_garbage_tampered_and_other_key_cookies(
    make_old_app: OldAppFactory,
) -> None:
    old = await make_old_app(EncryptedCookieStorage(RAW_KEY))
    cookie = (await old.write(user="alice")).strip('"')
    reader = AiohttpSessionCookie(RAW_KEY)
    assert await reader.load(cookie, namespace=COOKIE) is not None
    other = await make_old_app(EncryptedCookieStorage(os.urandom(32)))
    flipped = cookie[:60] + ("A" if cookie[60] != "A" else "B") + cookie[61:]
    refused = [
        "",
        "garbage",
        "gAAAAA",
        '"',
        '""',
        "x" * 5000,
        cookie + "AAAA",
        cookie[:-8],
        flipped,
        "é" + cookie,
        await other.write(user="alice"),
        Fernet(Fernet.generate_key()).encrypt(b'{"created": 1, "session": {"a": 1}}').decode(),
    ]
    # Standard base64 is not what Fernet wrote; a token with neither "-" nor "_" (about one
    # in a hundred) has no other spelling to try.
    standard = cookie.replace("-", "+").replace("_", "/")
    if standard != cookie:
        refused.append(standard)
    for value in refused:
        assert await reader.load(value, namespace=COOKIE) is None, value


async def test_cookie_reader_refuses_what_aiohttp_session_would_not_load() -> None:
    fernet = Fernet(base64.urlsafe_b64encode(RAW_KEY))
    reader = AiohttpSessionCookie(RAW_KEY)
    now = int(time.time())
    # Sealed with the right key but not a session aiohttp-session could have written:
    # no "created", an empty (logged out) session, not JSON, not an object, a future date.
    for plaintext in [
        b'{"session": {"user": "alice"}}',
        b'{"created": %d, "session": {}}' % now,
        b'{"created": "yesterday", "session": {"a": 1}}',
        b'{"created": true, "session": {"a": 1}}',
        b'{"created": %d, "session": ["a"]}' % now,
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b"[" * 100_000,
        b'{"created": %d, "session": {"a": 1}}' % (now + 3600),
    ]:
        assert await reader.load(fernet.encrypt(plaintext).decode(), namespace=COOKIE) is None
    good = fernet.encrypt(b'{"created": %d, "session": {"a": 1}}' % now).decode()
    assert (await reader.load(good, namespace=COOKIE)) is not None


async def test_cookie_reader_does_not_migrate_cookies_older_than_max_age(
    make_old_app: OldAppFactory, clock: FakeClock
) -> None:
    old = await make_old_app(EncryptedCookieStorage(RAW_KEY, max_age=3600))
    cookie = await old.write(user="alice")
    reader = AiohttpSessionCookie(RAW_KEY, max_age=3600)
    unlimited = AiohttpSessionCookie(RAW_KEY)
    # The fake clock starts from the cookie's own times (its "created", then Fernet's
    # timestamp at save), not from the test's start: a second may tick in between.
    fernet = Fernet(base64.urlsafe_b64encode(RAW_KEY))
    plaintext = json.loads(fernet.decrypt(cookie.strip('"')))
    clock.now = max(plaintext["created"], fernet.extract_timestamp(cookie.strip('"')))
    clock.advance(3599)
    assert (await reader.load(cookie, namespace=COOKIE)) is not None
    clock.advance(2)
    assert await reader.load(cookie, namespace=COOKIE) is None
    # Without max_age aiohttp-session never expired a cookie, and neither does the reader.
    assert (await unlimited.load(cookie, namespace=COOKIE)) is not None


@pytest.mark.parametrize(
    "key",
    [
        b"short",
        os.urandom(33),
        Fernet.generate_key(),  # 44 bytes: aiohttp-session refused these as bytes too
        "not base64 at all",
        [],
        12345,
        None,
    ],
    # Stable ids: two keys are random, and pytest-xdist needs the same names in every worker.
    ids=["short", "33-random-bytes", "fernet-key-bytes", "not-base64", "list", "int", "none"],
)
def test_cookie_reader_rejects_keys_aiohttp_session_could_not_have_used(key: Any) -> None:
    with pytest.raises(ConfigurationError, match="AiohttpSessionCookie"):
        AiohttpSessionCookie(key)


@pytest.mark.parametrize("max_age", [0, -1, 1.5, True, "60"])
def test_readers_reject_a_max_age_that_is_not_positive_seconds(max_age: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_age"):
        AiohttpSessionCookie(RAW_KEY, max_age=max_age)
    with pytest.raises(ConfigurationError, match="max_age"):
        AiohttpSessionRedis("redis://127.0.0.1:1/0", max_age=max_age)


# -- RedisStorage and MemcachedStorage --------------------------------------------------------


class Backend:
    """One server-side aiohttp-session storage and our reader of it, on the same server."""

    def __init__(
        self,
        kind: str,
        storage: Callable[..., aiohttp_session.AbstractStorage],
        reader: Callable[..., AiohttpSessionRedis | AiohttpSessionMemcached],
        exists: Callable[[str], Awaitable[bool]],
        raw: Callable[[str], Awaitable[bytes | None]],
    ) -> None:
        self.kind = kind
        self.raw = raw
        self.storage = storage
        self.reader = reader
        self.exists = exists


@pytest.fixture(params=["redis", "memcached"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "redis":
        client: aioredis.Redis = request.getfixturevalue("redis_client")

        async def redis_exists(name: str) -> bool:
            return bool(await client.exists(name))

        async def redis_raw(name: str) -> bytes | None:
            value = await client.get(name)
            return value if isinstance(value, bytes) else None

        return Backend(
            "redis",
            lambda **kw: RedisStorage(client, **kw),
            lambda **kw: AiohttpSessionRedis(client, **kw),
            redis_exists,
            redis_raw,
        )
    mc: aiomcache.Client = request.getfixturevalue("mc_client")

    async def mc_exists(name: str) -> bool:
        return await mc.get(name.encode()) is not None

    async def mc_raw(name: str) -> bytes | None:
        value = await mc.get(name.encode())
        return value if isinstance(value, bytes) else None

    return Backend(
        "memcached",
        lambda **kw: MemcachedStorage(mc, **kw),
        lambda **kw: AiohttpSessionMemcached(mc, **kw),
        mc_exists,
        mc_raw,
    )


async def test_server_reader_loads_the_record_and_delete_removes_it(
    make_old_app: OldAppFactory, backend: Backend
) -> None:
    old = await make_old_app(backend.storage())
    before = int(time.time())
    cookie = await old.write(user="alice", roles=["admin"])
    cookie = await old.write(cookie, cart=[1, 2])  # a second write, same record
    assert len(cookie) == 32
    reader = backend.reader()
    legacy = await reader.load(cookie, namespace=COOKIE)
    assert legacy is not None
    assert legacy.data == {"user": "alice", "roles": ["admin"], "cart": [1, 2]}
    assert before <= legacy.created <= int(time.time())
    assert await backend.exists(f"{COOKIE}_{cookie}")
    await reader.delete(cookie, namespace=COOKIE)
    assert not await backend.exists(f"{COOKIE}_{cookie}")
    assert await reader.load(cookie, namespace=COOKIE) is None
    await reader.delete(cookie, namespace=COOKIE)  # idempotent
    assert await old.read(cookie) == {}  # aiohttp-session itself no longer finds it


async def test_server_reader_keys_records_by_the_cookie_name(
    make_old_app: OldAppFactory, backend: Backend
) -> None:
    old = await make_old_app(backend.storage())
    cookie = await old.write(user="alice")
    reader = backend.reader()
    assert await reader.load(cookie, namespace="OTHER_NAME") is None
    await reader.delete(cookie, namespace="OTHER_NAME")
    assert await reader.load(cookie, namespace=COOKIE) is not None


async def test_server_reader_ignores_unknown_malformed_and_logged_out_cookies(
    make_old_app: OldAppFactory, backend: Backend
) -> None:
    old = await make_old_app(backend.storage())
    logged_out = await old.write(user="alice")
    await old.logout(logged_out)  # aiohttp-session leaves "{}" under the key
    assert await backend.exists(f"{COOKIE}_{logged_out}")
    reader = backend.reader()
    for value in [
        logged_out,
        os.urandom(16).hex(),  # well formed, never issued
        "",
        "nothex" * 6,
        logged_out.upper(),
        logged_out + "0",
        "../" + logged_out,
        f"{logged_out} x",
        "x" * 5000,
    ]:
        assert await reader.load(value, namespace=COOKIE) is None, value


async def test_server_reader_refuses_records_aiohttp_session_would_not_load(
    backend: Backend,
) -> None:
    reader = backend.reader()
    now = int(time.time())
    for record in [
        b"not json",
        b"\xff",
        b"[]",
        b'{"session": {"a": 1}}',
        b'{"created": %d, "session": {}}' % now,
        b'{"created": %d, "session": {"a": 1}}' % (now + 3600),
    ]:
        key = os.urandom(16).hex()
        await _plant(backend, f"{COOKIE}_{key}", record)
        assert await reader.load(key, namespace=COOKIE) is None, record


async def test_server_reader_does_not_migrate_records_older_than_max_age(
    make_old_app: OldAppFactory, backend: Backend, clock: FakeClock
) -> None:
    old = await make_old_app(backend.storage(max_age=600))
    cookie = await old.write(user="alice")
    reader = backend.reader(max_age=600)
    record = await backend.raw(f"{COOKIE}_{cookie}")
    assert record is not None
    clock.now = json.loads(record)["created"]
    clock.advance(599)
    assert (await reader.load(cookie, namespace=COOKIE)) is not None
    clock.advance(2)
    assert await reader.load(cookie, namespace=COOKIE) is None


async def test_server_reader_with_a_custom_key_pattern_and_decoder(
    make_old_app: OldAppFactory, backend: Backend
) -> None:
    def encoder(value: object) -> str:
        return "J" + json.dumps(value)

    def decoder(text: str) -> Any:
        return json.loads(text.removeprefix("J"))

    old = await make_old_app(
        backend.storage(key_factory=lambda: "k-" + os.urandom(8).hex(), encoder=encoder)
    )
    cookie = await old.write(user="alice")
    assert await backend.reader().load(cookie, namespace=COOKIE) is None  # not uuid4 hex
    reader = backend.reader(key_pattern=r"k-[0-9a-f]{16}", decoder=decoder)
    legacy = await reader.load(cookie, namespace=COOKIE)
    assert legacy is not None and legacy.data == {"user": "alice"}


async def _plant(backend: Backend, name: str, record: bytes) -> None:
    reader = backend.reader()
    if isinstance(reader, AiohttpSessionRedis):
        await reader._redis().set(name, record, ex=60)
    else:
        await reader._client.set(name.encode(), record, exptime=60)


async def test_redis_reader_raises_unavailable_only_for_cookies_worth_a_round_trip() -> None:
    reader = AiohttpSessionRedis("redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        # A cookie that is not shaped like an aiohttp-session key never reaches Redis: a
        # sealed cookie of ours or a stray value costs nothing, even with Redis down.
        assert await reader.load("x" * 43, namespace=COOKIE) is None
        await reader.delete("x" * 43, namespace=COOKIE)
        with pytest.raises(StoreUnavailable, match="AiohttpSessionRedis GET"):
            await reader.load(os.urandom(16).hex(), namespace=COOKIE)
        with pytest.raises(StoreUnavailable, match="AiohttpSessionRedis DEL"):
            await reader.delete(os.urandom(16).hex(), namespace=COOKIE)
    finally:
        await reader.close()


async def test_memcached_reader_raises_unavailable_when_the_server_is_down() -> None:
    client = aiomcache.Client("127.0.0.1", 1)
    reader = AiohttpSessionMemcached(client)
    try:
        assert await reader.load("x" * 43, namespace=COOKIE) is None
        with pytest.raises(StoreUnavailable, match="AiohttpSessionMemcached get"):
            await reader.load(os.urandom(16).hex(), namespace=COOKIE)
    finally:
        await client.close()


async def test_redis_reader_built_from_a_url_owns_its_client(
    redis_server: ServerHandle, redis_client: aioredis.Redis
) -> None:
    name = f"legacy-{os.urandom(4).hex()}"

    async def connected() -> bool:
        return any(c.get("name") == name for c in await redis_client.client_list())

    reader = AiohttpSessionRedis(f"{redis_server.url}?client_name={name}")
    assert not await connected()  # the constructor does no I/O
    assert await reader.load(os.urandom(16).hex(), namespace=COOKIE) is None
    assert await connected()
    await reader.close()
    await reader.close()  # idempotent
    for _ in range(100):  # the server notices the closed socket a moment later
        if not await connected():
            break
        await asyncio.sleep(0.02)
    assert not await connected()
    borrowed = AiohttpSessionRedis(redis_client)
    await borrowed.close()
    assert await redis_client.ping()  # a borrowed client is left open


@pytest.mark.parametrize("target", [object(), "http://localhost/", b"redis://x"])
def test_redis_reader_rejects_what_is_not_a_redis_client_or_url(target: Any) -> None:
    with pytest.raises(ConfigurationError, match="AiohttpSessionRedis"):
        AiohttpSessionRedis(target)


def test_memcached_reader_rejects_what_is_not_an_aiomcache_client() -> None:
    with pytest.raises(ConfigurationError, match=r"aiomcache\.Client"):
        AiohttpSessionMemcached("memcached://localhost")  # type: ignore[arg-type]


def test_key_pattern_must_be_a_regular_expression() -> None:
    with pytest.raises(ConfigurationError, match="key_pattern"):
        AiohttpSessionRedis("redis://127.0.0.1:1/0", key_pattern="[unclosed")


def test_importing_the_package_or_the_readers_imports_no_driver() -> None:
    import subprocess
    import sys

    code = (
        "import sys, aiohttp_sessionkit, aiohttp_sessionkit.legacy;"
        "from aiohttp_sessionkit import AiohttpSessionCookie;"
        "print(sorted(m for m in ('redis', 'aiomcache', 'aiohttp_security', 'aiohttp_session')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=REPO_ROOT,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"
