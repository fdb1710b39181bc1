"""The demo app works end to end: sign in, count, flash, sign out."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import demo


def csrf(text: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', text)
    assert match, "no CSRF field on the page"
    return match.group(1)


@pytest.mark.parametrize("store", ["memory://", "cookie"])
async def test_demo_login_counter_flash_logout(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    monkeypatch.setenv("SESSIONKIT_STORE", store)
    client = await aiohttp_client(demo.make_app())
    home = await (await client.get("/")).text()
    assert "Sign in" in home
    response = await client.post("/login", data={"user": "ada", "csrf": "forged"})
    assert response.status == 403
    response = await client.post("/login", data={"user": "ada", "csrf": csrf(home)})
    page = await response.text()
    assert "Signed in as <b>ada</b>" in page and "Welcome, ada!" in page
    assert "Welcome, ada!" not in await (await client.get("/")).text()  # flashes show once
    for expected in (1, 2):
        assert f"opened this page {expected} times" in await (await client.get("/counter")).text()
    home = await (await client.get("/")).text()
    response = await client.post("/logout", data={"csrf": csrf(home)})
    page = await response.text()
    assert "You have been signed out." in page and "Sign in" in page
    assert "opened this page 1 times" in await (await client.get("/counter")).text()
