"""The demo app in a real browser: Debian's Chromium, driven by Playwright.

The demo runs as users start it (``python examples/demo.py``, on a free loopback port that
it reports once bound) on the memory store and on the cookie store. The browser signs in
through the form, reads the flash message, counts, opens the session page and signs out;
the tests then check what the browser itself stored: the cookie's HttpOnly and SameSite
flags as Chromium reports them, that page JavaScript cannot read the session cookie, and
what the old cookie opens after the sign-out.

Without Chromium or Playwright the tests skip on a developer machine and fail in CI
(``CI=true``), like the test servers. ``bash scripts/install-test-deps.sh`` installs the
browser (never a downloaded one); Playwright comes with the ``test`` extra.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from aiohttp_sessionkit import generate_key
from tests.harness import REPO_ROOT
from tests.harness.servers import in_ci

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

ROOT = REPO_ROOT
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]
COOKIE = "AIOHTTP_SESSION"
# Generous: two shared cores may be busy with other test servers.
TIMEOUT_MS = 30_000

# One browser for the module (a launch is the slowest step), so one event loop for it too.
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


def missing(what: str) -> None:
    message = f"{what}: run bash scripts/install-test-deps.sh and install the 'test' extra"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        missing("playwright is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} is missing (Debian package chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def start_demo(store: str) -> tuple[asyncio.subprocess.Process, str]:
    """The demo as a user runs it, on a port it picks; its URL, read from what it prints."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / "demo.py"),
        env={
            **os.environ,
            "SESSIONKIT_STORE": store,
            "SESSIONKIT_KEY": generate_key(),  # the cookie store needs one (scripts/demo.sh)
            "HOST": "127.0.0.1",
            "PORT": "0",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
    match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    if not match:
        process.kill()
        await process.wait()
        errors = (await process.stderr.read()).decode()
        raise AssertionError(f"the demo printed no URL: {line!r} {errors}")
    return process, match.group(1)


@pytest_asyncio.fixture(loop_scope="module")
async def demo(store: str) -> AsyncIterator[str]:
    process, url = await start_demo(store)
    try:
        yield url
    finally:
        process.terminate()
        await process.wait()


async def new_page(browser: Browser) -> tuple[BrowserContext, Page]:
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    return context, await context.new_page()


async def session_cookie(context: BrowserContext) -> dict[str, Any] | None:
    found = [dict(c) for c in await context.cookies() if c["name"] == COOKIE]
    assert len(found) <= 1
    return found[0] if found else None


async def body(page: Page) -> str:
    return await page.inner_text("body")


async def follow(page: Page, path: str) -> str:
    """Click the demo's navigation link to ``path`` and return the page it opens."""
    async with page.expect_navigation(url=re.compile(re.escape(path) + "$")):
        await page.click(f"a[href='{path}']")
    return await body(page)


async def submit(page: Page, button: str) -> str:
    """Click a form's button and return the page the browser lands on (after redirects)."""
    async with page.expect_navigation():
        await page.click(f"button:text-is('{button}')")
    return await body(page)


@pytest.mark.parametrize("store", ["memory://", "cookie"])
async def test_sign_in_count_and_sign_out_in_chromium(
    browser: Browser, demo: str, store: str
) -> None:
    context, page = await new_page(browser)
    await page.goto(demo)
    assert await session_cookie(context) is None  # the sign-in form alone makes no session
    [csrf] = [c for c in await context.cookies() if c["name"] == "demo_csrf"]
    assert csrf["httpOnly"] is True and csrf["sameSite"] == "Lax"
    await page.fill("input[name=user]", "ada")
    shown = await submit(page, "Sign in")
    assert "Welcome, ada!" in shown and "Signed in as ada" in shown

    # What the browser stored, as it reports it.
    cookie = await session_cookie(context)
    assert cookie is not None
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    assert cookie["secure"] is False  # plain http on loopback: Secure comes with HTTPS
    assert COOKIE not in await page.evaluate("document.cookie")
    assert await page.evaluate(f"document.cookie.includes({cookie['value']!r})") is False

    # The flash is shown once.
    assert "Welcome, ada!" not in await follow(page, "/")

    assert "You have opened this page 1 time." in await follow(page, "/counter")
    await page.reload()
    assert "You have opened this page 2 times." in await body(page)

    shown = await follow(page, "/session")
    assert '"user": "ada"' in shown and '"visits": 2' in shown
    assert re.search(r"created\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", shown)

    signed_in = await session_cookie(context)
    assert signed_in is not None
    await follow(page, "/")
    shown = await submit(page, "Sign out")
    assert "You have been signed out." in shown and "Signed in as" not in shown
    after = await session_cookie(context)
    assert after is None or after["value"] != signed_in["value"]

    # The old cookie, planted in a fresh browser.
    replay, replay_page = await new_page(browser)
    await replay.add_cookies([{"name": COOKIE, "value": signed_in["value"], "url": demo}])
    await replay_page.goto(demo)
    replayed = await body(replay_page)
    if store == "cookie":
        # The cookie store cannot revoke: a copy taken before the sign-out still opens the
        # session until it times out (docs/security.md, "What it cannot do: revoke").
        assert "Signed in as ada" in replayed
    else:
        assert "Signed in as" not in replayed and "Sign in" in replayed
    await replay.close()
    await context.close()


@pytest.mark.parametrize("store", ["memory://"])
async def test_a_second_tab_after_sign_in_keeps_the_user_signed_in(
    browser: Browser, demo: str
) -> None:
    context, first = await new_page(browser)
    await first.goto(demo)
    second = await context.new_page()
    await second.goto(demo)  # the sign-in form, with the anonymous session's token
    await first.fill("input[name=user]", "ada")
    assert "Welcome, ada!" in await submit(first, "Sign in")

    await second.fill("input[name=user]", "eve")
    shown = await submit(second, "Sign in")
    assert "That form had expired" in shown
    assert "Signed in as ada" in shown  # refused, and not signed out
    await first.reload()
    assert "Signed in as ada" in await body(first)
    await context.close()


@pytest.mark.parametrize("store", ["memory://"])
async def test_the_session_panel_shows_what_each_request_did_in_chromium(
    browser: Browser, demo: str
) -> None:
    context, page = await new_page(browser)
    await page.goto(demo)
    panel = page.locator("aside.panel")
    assert await panel.is_visible()
    shown = await panel.inner_text()
    assert "What the session layer did on this request" in shown
    assert re.search(r"store\s+MemoryStore", shown)
    assert re.search(r"saved\s+no \(nothing changed\)", shown)
    # Laid out as a page: the panel below the main card, both within a readable width.
    card = await page.locator("section.card").bounding_box()
    box = await panel.bounding_box()
    assert card is not None and box is not None
    assert box["y"] >= card["y"] + card["height"] and 300 < box["width"] <= 46 * 16 + 1
    await page.fill("input[name=user]", "ada")
    await submit(page, "Sign in")
    shown = await panel.inner_text()
    assert re.search(r"Before this page: POST /login: .*created yes", shown)
    await follow(page, "/counter")
    assert re.search(r"saved\s+yes \(\d+\.\d\d ms\)", await panel.inner_text())
    cookie = await session_cookie(context)
    assert cookie is not None and cookie["value"] not in await page.content()  # never a token
    await follow(page, "/")
    await submit(page, "Sign out")
    assert re.search(r"Before this page: POST /logout: .*ended logout", await panel.inner_text())
    await context.close()


@pytest.mark.parametrize("store", ["memory://"])
async def test_your_sessions_signs_the_other_browser_out_in_chromium(
    browser: Browser, demo: str
) -> None:
    laptop, laptop_page = await new_page(browser)
    phone, phone_page = await new_page(browser)
    for page in (laptop_page, phone_page):
        await page.goto(demo)
        await page.fill("input[name=user]", "ada")
        assert "Signed in as ada" in await submit(page, "Sign in")

    shown = await follow(laptop_page, "/devices")
    assert "Your sessions" in shown and shown.count("this device") == 1
    assert "HeadlessChrome" in shown  # the User-Agent each browser signed in with
    assert await laptop_page.locator("button:text-is('Sign out')").count() == 1  # the phone

    shown = await submit(laptop_page, "Sign out everywhere else")
    assert "Signed out everywhere else (1 other session)." in shown
    assert await laptop_page.locator("button:text-is('Sign out')").count() == 0

    await phone_page.reload()
    assert "Signed in as" not in await body(phone_page)  # the other browser is signed out
    await laptop_page.goto(demo)
    assert "Signed in as ada" in await body(laptop_page)

    # Sign in on the phone again, and sign it out from the laptop's list, one device.
    await phone_page.fill("input[name=user]", "ada")
    await submit(phone_page, "Sign in")
    await follow(laptop_page, "/devices")
    shown = await submit(laptop_page, "Sign out")
    assert "That device is signed out." in shown
    await phone_page.reload()
    assert "Signed in as" not in await body(phone_page)
    await laptop.close()
    await phone.close()
