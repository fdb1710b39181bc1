"""Deployed as users deploy it: behind a TLS-terminating proxy, under several workers."""

from __future__ import annotations

import base64
import itertools
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp_remotes
import pytest
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient

from aiohttp_sessionkit import (
    ConfigurationError,
    EncryptedCookieStore,
    MemoryStore,
    generate_key,
    get_session,
    new_session,
    setup,
)
from tests.harness import REPO_ROOT
from tests.harness.servers import HOST, free_port, port_accepts

ROOT = REPO_ROOT

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


# -- keys shared by every process ------------------------------------------------------------


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param(None, id="None"),
        pytest.param("", id="empty-string"),
        pytest.param("   ", id="blank-string"),
        pytest.param(b"", id="empty-bytes"),
        pytest.param([], id="empty-list"),
        pytest.param([None], id="list-of-None"),
        pytest.param(["", generate_key()], id="empty-first-of-two"),
    ],
)
def test_an_unset_key_fails_naming_the_environment_variable(keys: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        EncryptedCookieStore(keys)
    message = str(caught.value)
    assert "SESSION_KEY" in message
    assert "python -m aiohttp_sessionkit keygen" in message


async def sealed_by(store: EncryptedCookieStore, data: dict[str, Any]) -> str:
    app = web.Application()

    async def write(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.update(data)
        return web.Response()

    setup(app, store)
    app.router.add_get("/", write)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.get("/")
        token: str = response.cookies[COOKIE].value
        return token


async def test_a_cookie_sealed_under_another_processs_key_is_logged_once_per_key_id(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    worker_a = await sealed_by(EncryptedCookieStore(generate_key()), {"user": "ada"})
    worker_b = await sealed_by(EncryptedCookieStore(generate_key()), {"user": "grace"})
    app = web.Application()

    async def read(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.Response(text=str(session.get("user", "stranger")))

    setup(app, EncryptedCookieStore(generate_key()))
    app.router.add_get("/", read)
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    caplog.set_level(logging.INFO, logger="aiohttp_sessionkit")
    for token in (worker_a, worker_a, worker_b, worker_a, worker_b):
        response = await client.get("/", headers={"Cookie": f"{COOKIE}={token}"})
        assert await response.text() == "stranger"  # a fresh session, not an error
    lines = [r for r in caplog.records if "not one of this process's keys" in r.getMessage()]
    assert len(lines) == 2  # one per foreign key id, however often it comes back
    assert all(r.levelno == logging.INFO for r in lines)
    text = caplog.text
    assert "SESSION_KEY" in lines[0].getMessage()
    for token in (worker_a, worker_b):
        assert token not in text and token[:16] not in text


async def test_a_flood_of_invented_key_ids_is_not_logged_line_by_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    genuine = await sealed_by(EncryptedCookieStore(generate_key()), {"user": "ada"})
    raw = bytearray(base64.urlsafe_b64decode(genuine + "=" * (-len(genuine) % 4)))
    store = EncryptedCookieStore(generate_key())
    caplog.set_level(logging.INFO, logger="aiohttp_sessionkit")
    for n in range(500):
        raw[1:4] = n.to_bytes(3, "big")
        token = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
        assert await store.load(token, namespace=COOKIE) is None
    assert 1 < len(caplog.records) <= 40


# -- several workers under gunicorn ------------------------------------------------------------


@pytest.fixture
def gunicorn_workers(tmp_path: Path) -> Iterator[str]:
    """examples/gunicorn_app.py under gunicorn: two aiohttp workers, --preload, one key."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # this checkout's package, not an installed one
        "SESSION_KEY": generate_key(),
    }
    log_file = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "gunicorn_app:app",
            "--chdir",
            str(ROOT / "examples"),
            "--worker-class",
            "aiohttp.GunicornWebWorker",
            "--workers",
            "2",
            "--preload",
            "--bind",
            f"{HOST}:{port}",
            "--graceful-timeout",
            "5",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_accepts(port):
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()
            assert time.monotonic() < deadline, "gunicorn did not listen within 30 s"
            time.sleep(0.05)
        yield f"http://{HOST}:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


async def test_a_session_is_read_by_both_gunicorn_workers(gunicorn_workers: str) -> None:
    cookie = None
    served: list[tuple[int, int]] = []  # (worker pid, visits) in request order
    # A new connection per request lets the kernel hand each one to either worker.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True), cookie_jar=DummyCookieJar()
    ) as http:
        for _ in range(300):
            headers: dict[str, str] = {} if cookie is None else {"Cookie": f"{COOKIE}={cookie}"}
            async with http.get(gunicorn_workers, headers=headers) as response:
                assert response.status == 200
                body = await response.json()
                cookie = response.cookies[COOKIE].value
            served.append((body["worker"], body["visits"]))
            workers = {pid for pid, _ in served}
            switches = sum(a[0] != b[0] for a, b in itertools.pairwise(served))
            if len(workers) == 2 and switches >= 3:
                break
    assert len({pid for pid, _ in served}) == 2, f"one worker served all of {len(served)}"
    # The count went on across every switch of worker: each read the other's cookie.
    assert [visits for _, visits in served] == list(range(1, len(served) + 1))
    print(f"gunicorn: {len(served)} requests, workers in order: {[p for p, _ in served]}")
