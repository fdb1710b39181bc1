"""The demo app works end to end: sign in, count, flash, sign out, and says what is wrong."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import DummyCookieJar

from aiohttp_sessionkit import generate_key
from examples import demo
from tests.harness import REPO_ROOT

ROOT = REPO_ROOT


def csrf(text: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', text)
    assert match, "no CSRF field on the page"
    return match.group(1)


@pytest.mark.parametrize("store", ["memory://", "cookie"])
async def test_demo_login_counter_flash_logout(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    monkeypatch.setenv("SESSIONKIT_STORE", store)
    monkeypatch.setenv("SESSIONKIT_KEY", generate_key())
    client = await aiohttp_client(demo.make_app())
    home = await (await client.get("/")).text()
    assert "Sign in" in home
    assert csrf(home) == csrf(await (await client.get("/")).text())  # one token per session
    response = await client.post("/login", data={"user": "ada", "csrf": "forged"})
    assert response.url.path == "/" and "expired" in response.url.query
    assert demo.EXPIRED in (text := await response.text()) and "Sign in" in text
    response = await client.post("/login", data={"user": "ada", "csrf": csrf(home)})
    page = await response.text()
    assert "Signed in as <b>ada</b>" in page and "Welcome, ada!" in page
    assert "Welcome, ada!" not in await (await client.get("/")).text()  # flashes show once
    assert "opened this page 1 time." in await (await client.get("/counter")).text()
    assert "opened this page 2 times." in await (await client.get("/counter")).text()
    session_page = await (await client.get("/session")).text()
    assert re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</td>", session_page)
    assert "&quot;visits&quot;: 2" in session_page
    home = await (await client.get("/")).text()
    response = await client.post("/logout", data={"csrf": csrf(home)})
    page = await response.text()
    assert "You have been signed out." in page and "Sign in" in page
    assert "opened this page 1 time." in await (await client.get("/counter")).text()


async def test_a_form_from_before_sign_in_is_refused_without_signing_out(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second tab still shows the sign-in form with the token of the session before sign-in.
    monkeypatch.setenv("SESSIONKIT_STORE", "memory://")
    client = await aiohttp_client(demo.make_app())
    stale_token = csrf(await (await client.get("/")).text())
    await client.post("/login", data={"user": "ada", "csrf": stale_token})
    response = await client.post("/login", data={"user": "eve", "csrf": stale_token})
    page = await response.text()
    assert demo.EXPIRED in page and "Signed in as <b>ada</b>" in page
    assert response.history[0].status == 303 and "Set-Cookie" not in response.history[0].headers


def run_demo(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        env={**os.environ, **env},  # as a user runs it: no PYTHONPATH
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_mistyped_store_is_one_line_listing_every_accepted_value() -> None:
    result = run_demo(SESSIONKIT_STORE="redis")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    for value in ("cookie", "memory://", "redis://", "postgres://", "postgresql://", "mongodb://"):
        assert value in result.stderr


def test_a_busy_port_is_one_line_and_no_url() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_demo(PORT=str(busy.getsockname()[1]), HOST="127.0.0.1")
    assert result.returncode == 2 and result.stdout == ""  # no URL for a port it never bound
    assert result.stderr.count("\n") == 1 and "PORT=" in result.stderr


@pytest.mark.parametrize("store", ["memory://", "cookie"])
async def test_anonymous_pages_create_no_session(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    # A visitor who only looks at the sign-in form gets a CSRF cookie of its own and no
    # session: a flood of such views leaves nothing in the session store.
    monkeypatch.setenv("SESSIONKIT_STORE", store)
    monkeypatch.setenv("SESSIONKIT_KEY", generate_key())  # the cookie store's shared key
    client = await aiohttp_client(demo.make_app())
    first = await client.get("/")
    assert demo.CSRF_COOKIE in first.cookies and "AIOHTTP_SESSION" not in first.cookies
    for _ in range(3):
        again = await client.get("/")
        assert "Set-Cookie" not in again.headers  # same CSRF cookie, still no session
        assert csrf(await again.text()) == csrf(await first.text())
    response = await client.post("/login", data={"user": "ada", "csrf": csrf(await first.text())})
    assert "Signed in as <b>ada</b>" in await response.text()


@pytest.mark.parametrize(
    "nonce",
    [
        "",
        "short",
        "A" * 42,  # one character short
        "A" * 44,  # one too many
        "A" * 42 + "=",  # padding
        "A" * 42 + "+",  # standard base64, not the URL-safe alphabet
        "A" * 42 + ".",
        "A" * 41 + "%41",  # percent-encoded, never decoded
        "A" * 21 + " " + "A" * 21,
    ],
)
async def test_a_malformed_csrf_cookie_is_replaced_and_its_form_refused(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch, nonce: str
) -> None:
    monkeypatch.setenv("SESSIONKIT_STORE", "memory://")
    client = await aiohttp_client(demo.make_app(), cookie_jar=DummyCookieJar())
    planted = {"Cookie": f"{demo.CSRF_COOKIE}={nonce}"}
    home = await client.get("/", headers=planted)
    assert home.status == 200
    assert home.cookies[demo.CSRF_COOKIE].value not in ("", nonce)  # a fresh one of ours
    refused = await client.post(
        "/login",
        data={"user": "eve", "csrf": csrf(await home.text())},
        headers=planted,
        allow_redirects=False,
    )
    assert refused.status == 303 and refused.headers["Location"] == "/?expired=1"
    assert "Set-Cookie" not in refused.headers


async def test_a_token_only_opens_with_the_cookie_it_was_made_for(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An attacker's own valid cookie and token pair does not work with the victim's cookie.
    monkeypatch.setenv("SESSIONKIT_STORE", "memory://")
    client = await aiohttp_client(demo.make_app(), cookie_jar=DummyCookieJar())
    attacker, victim = await client.get("/"), await client.get("/")
    victim_cookie = {"Cookie": f"{demo.CSRF_COOKIE}={victim.cookies[demo.CSRF_COOKIE].value}"}
    refused = await client.post(
        "/login",
        data={"user": "eve", "csrf": csrf(await attacker.text())},
        headers=victim_cookie,
        allow_redirects=False,
    )
    assert refused.status == 303 and refused.headers["Location"] == "/?expired=1"
    accepted = await client.post(
        "/login",
        data={"user": "ada", "csrf": csrf(await victim.text())},
        headers=victim_cookie,
        allow_redirects=False,
    )
    assert accepted.status == 302 and "AIOHTTP_SESSION" in accepted.cookies
    assert accepted.cookies[demo.CSRF_COOKIE].value != victim.cookies[demo.CSRF_COOKIE].value


def panel(text: str) -> dict[str, str]:
    """The session panel of a demo page, row by row, and the previous request's line."""
    aside = re.search(r'<aside class="panel">(.*?)</aside>', text, re.DOTALL)
    assert aside, "no session panel on the page"
    rows = dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", aside.group(1)))
    previous = re.search(r'<p class="previous">Before this page: ([^<]*)</p>', aside.group(1))
    rows["previous"] = previous.group(1) if previous else ""
    return rows


@pytest.mark.parametrize("store", ["memory://", "cookie"])
async def test_every_page_shows_what_the_session_layer_did_on_that_request(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    monkeypatch.setenv("SESSIONKIT_STORE", store)
    monkeypatch.setenv("SESSIONKIT_KEY", generate_key())
    client = await aiohttp_client(demo.make_app())
    expected_store = "MemoryStore" if store == "memory://" else "EncryptedCookieStore"
    first = panel(home := await (await client.get("/")).text())
    assert first["store"] == expected_store
    assert first["loaded"].startswith("no session to open")
    assert first["saved"] == "no (nothing changed)"
    assert (first["new token issued"], first["created"], first["ended"]) == ("no", "no", "no")
    assert "<style>" in home and "<link" not in home and "<script" not in home  # inline CSS
    # The sign-in redirects; the page it leads to tells what the POST did.
    after_login = panel(await (await client.post("/login", data={
        "user": "ada", "csrf": csrf(home)})).text())  # fmt: skip
    assert "POST /login" in after_login["previous"]
    assert "created yes" in after_login["previous"]
    assert "new token issued yes" in after_login["previous"]
    # The welcome flash was shown and consumed: the page itself rewrote the session.
    assert after_login["loaded"].startswith("yes, an existing session (")
    counted = panel(await (await client.get("/counter")).text())
    assert counted["saved"].startswith("yes (") and counted["saved"].endswith(" ms)")
    assert counted["created"] == "no" and counted["ended"] == "no"
    # The cookie store's token is its data: every write issues one.
    assert counted["new token issued"] == ("yes" if store == "cookie" else "no")
    home = await (await client.get("/")).text()
    after_logout = panel(await (await client.post("/logout", data={"csrf": csrf(home)})).text())
    assert "POST /logout" in after_logout["previous"]
    assert "ended logout" in after_logout["previous"]
    # A second sign-in in the same session is a regeneration, shown with a new token.
    home = await (await client.get("/")).text()
    await client.post("/login", data={"user": "bo", "csrf": csrf(home)})
    home = await (await client.get("/")).text()
    again = panel(await (await client.post("/login", data={
        "user": "cy", "csrf": csrf(home)})).text())  # fmt: skip
    assert "regenerated yes (a new id)" in again["previous"]


def devices(page: str) -> int:
    """Rows of the "Your sessions" table (a header and one per device), not the panel's."""
    main = page.split('<aside class="panel">')[0]
    return main.count("<tr>")


async def sign_in(client: Any, get: Any, post: Any, user: str) -> None:
    home = await (await get("/")).text()
    page = await (await post("/login", data={"user": user, "csrf": csrf(home)})).text()
    assert f"Signed in as <b>{user}</b>" in page


async def test_your_sessions_lists_devices_and_signs_one_or_all_others_out(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSIONKIT_STORE", "memory://")
    laptop = await aiohttp_client(demo.make_app())
    async with (
        aiohttp.ClientSession(
            base_url=laptop.make_url("/"), cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as phone,
        aiohttp.ClientSession(
            base_url=laptop.make_url("/"), cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as tablet,
    ):
        await sign_in(laptop, laptop.get, laptop.post, "ada")
        await sign_in(phone, phone.get, phone.post, "ada")
        await sign_in(tablet, tablet.get, tablet.post, "ada")
        page = await (await laptop.get("/devices", headers={"User-Agent": "laptop"})).text()
        assert devices(page) == 4  # a header and three devices
        assert page.count("this device") == 1 and "127.0.0.1" in page
        handles = re.findall(r'name="handle" value="([0-9a-f]{64})"', page)
        assert len(handles) == 2
        # Sign out one device: exactly one of the two others is signed out.
        page = await (
            await laptop.post("/devices/end", data={"handle": handles[0], "csrf": csrf(page)})
        ).text()
        assert "That device is signed out." in page and devices(page) == 3
        signed_in = [
            "Signed in as" in await (await device.get("/")).text() for device in (phone, tablet)
        ]
        assert sorted(signed_in) == [False, True]
        # A handle edited in the form (garbage, or another user's) ends nothing.
        page = await (
            await laptop.post("/devices/end", data={"handle": "0" * 64, "csrf": csrf(page)})
        ).text()
        assert "That session had already ended." in page
        page = await (await laptop.post("/devices/end-others", data={"csrf": csrf(page)})).text()
        assert "Signed out everywhere else (1 other session)." in page
        assert devices(page) == 2
        for device in (phone, tablet):
            assert "Signed in as" not in await (await device.get("/")).text()
        assert "Signed in as <b>ada</b>" in await (await laptop.get("/")).text()


async def test_your_sessions_on_the_cookie_store_says_a_server_side_store_is_needed(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSIONKIT_STORE", "cookie")
    monkeypatch.setenv("SESSIONKIT_KEY", generate_key())
    client = await aiohttp_client(demo.make_app())
    await sign_in(client, client.get, client.post, "ada")
    assert "run the demo on a server-side store" in await (await client.get("/devices")).text()
    assert (await client.get("/devices", allow_redirects=False)).status == 200
    anonymous = await aiohttp_client(demo.make_app())
    response = await anonymous.get("/devices", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/"
