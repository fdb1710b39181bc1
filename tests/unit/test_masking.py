"""No password from a store URL in anything the library or the demo prints."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

import pytest
from aiohttp import web

from aiohttp_sessionkit import ConfigurationError, get_session, setup
from aiohttp_sessionkit.masking import mask_credentials
from aiohttp_sessionkit.stores.url import store_from_url
from tests.harness import REPO_ROOT

ROOT = REPO_ROOT
SECRET = "s3cret-passw0rd"

MASKED = [
    ("redis://:s3cret-passw0rd@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("rediss://default:s3cret-passw0rd@cache:6380/1", "rediss://default:***@cache:6380/1"),
    ("redis://:s3c@ret/pa?ss@host/0", "redis://:***@host/0"),
    ("redis://:s3cret pass'word\"@host/0", "redis://:***@host/0"),
    (
        "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster/0",
        "redis+sentinel://:***@10.0.0.1:26379,10.0.0.2:26379/mymaster/0",
    ),
    (
        "mongodb://app:pw@h1:27017,h2:27017/sessions?authSource=admin&tls=true",
        "mongodb://app:***@h1:27017,h2:27017/sessions?authSource=admin&tls=true",
    ),
    (
        "postgresql://app@db/sessions?password=pw&sslmode=require",
        "postgresql://app@db/sessions?password=***&sslmode=require",
    ),
    ("mysql+asyncmy://root:pw@127.0.0.1:3306/app", "mysql+asyncmy://root:***@127.0.0.1:3306/app"),
    (
        "cannot reach 'redis://:a@one/0' nor mongodb://u:b@two/x; giving up",
        "cannot reach 'redis://:***@one/0' nor mongodb://u:***@two/x; giving up",
    ),
    ("memory://", "memory://"),
    ("sqlite+aiosqlite:///var/lib/app/sessions.db", "sqlite+aiosqlite:///var/lib/app/sessions.db"),
    ("redis://app@cache/0", "redis://app@cache/0"),  # a user name alone is not a secret
    ("no URL here: a:b@c", "no URL here: a:b@c"),
]


@pytest.mark.parametrize(("text", "shown"), MASKED)
def test_passwords_in_urls_are_masked_and_the_rest_kept(text: str, shown: str) -> None:
    assert mask_credentials(text) == shown


@pytest.mark.parametrize(
    "url",
    [
        f"memory://:{SECRET}@localhost?max_entries=lots",  # a bad option, echoed
        f"redis//:{SECRET}@cache:6379/0",  # a typo: no scheme at all
        f"nosuchdb://:{SECRET}@cache:6379/0",
        f"redis://:{SECRET}@cache:notaport/0",
    ],
)
def test_store_url_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        store_from_url(url)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)


async def test_a_503_log_line_never_shows_the_password(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = web.Application()
    setup(app, f"redis://:{SECRET}@127.0.0.1:{port}/0", store_timeout=2)

    async def handler(request: web.Request) -> web.Response:
        (await get_session(request))["n"] = 1
        return web.Response(text="ok")

    app.router.add_post("/", handler)
    client = await aiohttp_client(app)
    response = await client.post("/")
    assert response.status == 503
    assert caplog.records, "the outage was not logged"
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            assert SECRET not in str(record.exc_info[1])


def run_demo(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "store",
    [
        f"nosuchdb://:{SECRET}@cache:6379/0",  # names no store
        f"memory://:{SECRET}@localhost?max_entries=lots",  # the store refuses it
    ],
)
def test_the_demos_setting_errors_mask_the_password(store: str) -> None:
    result = run_demo(SESSIONKIT_STORE=store)
    assert result.returncode == 2
    assert "SESSIONKIT_STORE=" in result.stderr and ":***@" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_the_demos_banner_masks_the_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # Redis is not there: the demo starts anyway
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PORT": "0",
            "SESSIONKIT_STORE": f"redis://:{SECRET}@127.0.0.1:{port}/0",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()  # printed once the port is bound
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
    assert banner.startswith("aiohttp-sessionkit demo on http://127.0.0.1:")
    assert f"redis://:***@127.0.0.1:{port}/0" in banner
    assert SECRET not in banner + errors
