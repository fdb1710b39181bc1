"""A verifier that follows the issuer's JWKS URL: keys at startup, rotation without a restart."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import ed25519

from aiohttp_sessionkit import (
    ConfigurationError,
    HeaderTransport,
    JSONSerializer,
    JWTStore,
    get_session,
    setup,
)
from aiohttp_sessionkit.stores.jwt import JWKSEndpoint
from tests.harness.servers import free_port

NS = "AIOHTTP_SESSION"
FRESH = {"data": {}, "new": True}


class Issuer:
    """The issuing service: its keys, and the JWKS document it publishes (changeable)."""

    def __init__(self) -> None:
        self.store = JWTStore(ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA")
        self.published: list[JWTStore] = [self.store]
        self.fetches = 0
        #: Replaces the published document's response when set (a faulty server).
        self.fault: Callable[[], web.StreamResponse] | None = None

    def rotate(self) -> None:
        """A new signing key, published first; the old one stays published."""
        self.store = JWTStore(ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA")
        self.published.insert(0, self.store)

    def document(self) -> dict[str, Any]:
        return {"keys": [key for store in self.published for key in store.jwks()["keys"]]}

    async def handler(self, request: web.Request) -> web.StreamResponse:
        self.fetches += 1
        if self.fault is not None:
            return self.fault()
        return web.json_response(self.document())

    async def token(self, **data: Any) -> str:
        store = self.store
        session = store.session_class()
        session.update(data)
        token = await store.save(
            None, store.dump(session, JSONSerializer(), session.created), ttl=300, namespace=NS
        )
        assert token is not None
        return token


async def serve_jwks(issuer: Issuer, port: int | None = None) -> web.AppRunner:
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", issuer.handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port or 0).start()
    return runner


def url_of(runner: web.AppRunner) -> str:
    port = runner.addresses[0][1]
    return f"http://127.0.0.1:{port}/.well-known/jwks.json"


async def verifier(endpoint: JWKSEndpoint) -> TestClient[web.Request, web.Application]:
    async def me(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response({"data": dict(session), "new": session.new})

    app = web.Application()
    setup(app, JWTStore(endpoint, algorithm="EdDSA"), transport=HeaderTransport())
    app.router.add_get("/me", me)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()  # runs the store's open(): the first fetch
    return client


async def me(client: TestClient[web.Request, web.Application], token: str) -> Any:
    response = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200
    return await response.json()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_verifier_follows_the_issuers_key_rotation_without_a_restart() -> None:
    issuer = Issuer()
    runner = await serve_jwks(issuer)
    client = await verifier(JWKSEndpoint(url_of(runner), min_refetch_interval=0.2))
    try:
        assert issuer.fetches == 1  # at startup
        assert (await me(client, await issuer.token(sub="ada")))["data"] == {"sub": "ada"}
        issuer.rotate()
        rotated = await issuer.token(sub="bob")
        # The new key's kid is unknown: that request is fresh, and a refetch is started.
        assert await me(client, rotated) == FRESH

        async def opens() -> bool:
            return bool((await me(client, rotated))["data"] == {"sub": "bob"})

        assert await eventually(opens)
        assert issuer.fetches == 2
    finally:
        await client.close()
        await runner.cleanup()


async def test_unknown_kids_refetch_at_most_once_per_interval() -> None:
    issuer = Issuer()
    runner = await serve_jwks(issuer)
    client = await verifier(JWKSEndpoint(url_of(runner), min_refetch_interval=60))
    try:
        stranger = Issuer()  # tokens whose kid the issuer never published
        tokens = [await stranger.token(i=i) for i in range(20)]
        await asyncio.sleep(0.3)  # well past any refetch the startup fetch could trigger
        for token in tokens:
            assert await me(client, token) == FRESH
        await asyncio.sleep(0.3)
        assert issuer.fetches <= 1  # the startup fetch; unknown kids right after it: none
    finally:
        await client.close()
        await runner.cleanup()


async def test_a_key_removed_from_the_set_stops_verifying_at_the_next_refresh() -> None:
    issuer = Issuer()
    runner = await serve_jwks(issuer)
    client = await verifier(
        JWKSEndpoint(url_of(runner), refresh_interval=0.3, min_refetch_interval=0.1)
    )
    try:
        token = await issuer.token(sub="ada")
        assert (await me(client, token))["data"] == {"sub": "ada"}  # verified and cached
        issuer.rotate()
        issuer.published = [issuer.store]  # the old key is withdrawn (compromised, say)

        async def refused() -> bool:
            return bool(await me(client, token) == FRESH)

        assert await eventually(refused)
    finally:
        await client.close()
        await runner.cleanup()


def _status(code: int) -> Callable[[], web.StreamResponse]:
    return lambda: web.Response(status=code, text="{}")


FAULTS: dict[str, Callable[[], web.StreamResponse]] = {
    "http-500": _status(500),
    "redirect": lambda: web.Response(status=302, headers={"Location": "https://evil.example/"}),
    "not-json": lambda: web.Response(text="<html>maintenance</html>"),
    "json-list": lambda: web.json_response([{"keys": []}]),
    "no-keys": lambda: web.json_response({"keys": []}),
    "private-key": lambda: web.json_response(
        {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "d": "AAAA"}]}
    ),
    "oversized": lambda: web.Response(
        text=json.dumps({"keys": [], "pad": "x" * 4096}), content_type="application/json"
    ),
    "deeply-nested": lambda: web.Response(
        text='{"keys": ' + "[" * 200 + "]" * 200 + "}", content_type="application/json"
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_a_bad_response_keeps_the_keys_in_use_and_is_logged(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    issuer = Issuer()
    runner = await serve_jwks(issuer)
    client = await verifier(
        JWKSEndpoint(url_of(runner), refresh_interval=0.2, min_refetch_interval=0.1,
                     max_bytes=1024)
    )  # fmt: skip
    try:
        token = await issuer.token(sub="ada")
        assert (await me(client, token))["data"] == {"sub": "ada"}
        caplog.set_level(logging.WARNING, logger="aiohttp_sessionkit")
        issuer.fault = FAULTS[fault]
        fetched = issuer.fetches

        async def refreshed_twice() -> bool:
            return issuer.fetches >= fetched + 2

        assert await eventually(refreshed_twice)
        assert (await me(client, token))["data"] == {"sub": "ada"}  # old keys kept
        warnings = [r.getMessage() for r in caplog.records if "JWKS" in r.getMessage()]
        assert warnings and all("keeping the keys in use" in w for w in warnings)
    finally:
        await client.close()
        await runner.cleanup()


async def test_a_jwks_server_down_at_startup_gives_fresh_sessions_then_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    issuer = Issuer()
    port = free_port()
    url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    caplog.set_level(logging.WARNING, logger="aiohttp_sessionkit")
    client = await verifier(JWKSEndpoint(url, min_refetch_interval=0.2))
    runner = None
    try:
        token = await issuer.token(sub="ada")
        assert await me(client, token) == FRESH  # no keys yet: never a 500
        assert any("could not be used" in r.getMessage() for r in caplog.records)
        runner = await serve_jwks(issuer, port)

        async def opens() -> bool:
            return bool((await me(client, token))["data"] == {"sub": "ada"})

        assert await eventually(opens)  # the unknown kid fetched the set once it was up
    finally:
        await client.close()
        if runner is not None:
            await runner.cleanup()


@pytest.mark.parametrize(
    "url",
    [
        "http://issuer.example/.well-known/jwks.json",  # keys over plain http, not loopback
        "http://10.0.0.1/jwks.json",
        "ftp://issuer.example/jwks.json",
        "https://",
        "issuer.example/jwks.json",
        "",
    ],
)
def test_a_jwks_url_that_is_not_https_or_loopback_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="JWKSEndpoint"):
        JWKSEndpoint(url)


@pytest.mark.parametrize(
    "url",
    ["https://issuer.example/jwks.json", "http://127.0.0.1:8080/jwks", "http://[::1]/jwks",
     "http://localhost/jwks"],
)  # fmt: skip
def test_https_and_loopback_urls_are_accepted(url: str) -> None:
    assert JWKSEndpoint(url).url == url


@pytest.mark.parametrize(
    "options",
    [
        {"refresh_interval": 0},
        {"refresh_interval": float("inf")},
        {"min_refetch_interval": -1},
        {"timeout": True},
        {"max_bytes": 10},
        {"max_bytes": 10**9},
        {"refresh_interval": 10, "min_refetch_interval": 60},
    ],
)
def test_jwks_endpoint_options_out_of_range_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="JWKSEndpoint"):
        JWKSEndpoint("https://issuer.example/jwks.json", **options)
