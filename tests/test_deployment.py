"""Deployed as users deploy it: behind a TLS-terminating proxy, under several workers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp_remotes
import pytest
from aiohttp import DummyCookieJar, web
from pytest_aiohttp import AiohttpClient

from aiohttp_sessionkit import MemoryStore, get_session, new_session, setup

COOKIE = "AIOHTTP_SESSION"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- behind a TLS-terminating proxy ----------------------------------------------------------


@web.middleware
async def trust_forwarded_proto(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What an application writes by hand behind a proxy it trusts."""
    proto = request.headers.get("X-Forwarded-Proto")
    if proto in ("http", "https"):
        request = request.clone(scheme=proto)
    return await handler(request)


async def login(request: web.Request) -> web.Response:
    session = await get_session(request)
    session["user"] = "ada"
    return web.Response(text=f"secure={request.secure}")


async def logout(request: web.Request) -> web.Response:
    await new_session(request)
    return web.Response(text=f"secure={request.secure}")


async def proxied_app(rewriter: str, order: str) -> web.Application:
    """Sessions and a scheme rewrite, the rewrite installed before or after ``setup``."""
    app = web.Application()
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)

    async def install_rewrite() -> None:
        if rewriter == "clone":
            app.middlewares.append(trust_forwarded_proto)
        else:
            await aiohttp_remotes.setup(app, aiohttp_remotes.XForwardedRelaxed())

    if order == "rewrite-first":
        await install_rewrite()
    setup(app, MemoryStore())
    if order == "setup-first":
        await install_rewrite()
    return app


def cookie_attrs(response: Any) -> set[str]:
    headers = response.headers.getall("Set-Cookie", [])
    assert len(headers) == 1, headers
    assert headers[0].startswith(COOKIE + "=")
    return {part.strip().split("=")[0].lower() for part in headers[0].split(";")[1:]}


@pytest.mark.parametrize("order", ["rewrite-first", "setup-first"])
@pytest.mark.parametrize("rewriter", ["clone", "aiohttp-remotes"])
async def test_cookie_is_secure_when_the_handler_saw_https_whatever_the_middleware_order(
    aiohttp_client: AiohttpClient, rewriter: str, order: str
) -> None:
    client = await aiohttp_client(await proxied_app(rewriter, order), cookie_jar=DummyCookieJar())
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    response = await client.post("/login", headers=forwarded)
    assert response.status == 200
    assert await response.text() == "secure=True"
    assert "secure" in cookie_attrs(response)
    token = response.cookies[COOKIE].value

    # The deletion repeats Secure: a browser ignores a deletion that lacks an attribute of
    # the cookie it would delete.
    response = await client.post("/logout", headers={**forwarded, "Cookie": f"{COOKIE}={token}"})
    assert response.status == 200
    attrs = cookie_attrs(response)
    assert "secure" in attrs
    assert "max-age" in attrs


@pytest.mark.parametrize("order", ["rewrite-first", "setup-first"])
@pytest.mark.parametrize("rewriter", ["clone", "aiohttp-remotes"])
async def test_cookie_is_not_secure_when_the_proxy_says_http(
    aiohttp_client: AiohttpClient, rewriter: str, order: str
) -> None:
    client = await aiohttp_client(await proxied_app(rewriter, order), cookie_jar=DummyCookieJar())
    response = await client.post(
        "/login", headers={"X-Forwarded-Proto": "http", "X-Forwarded-For": "203.0.113.7"}
    )
    assert await response.text() == "secure=False"
    assert "secure" not in cookie_attrs(response)
