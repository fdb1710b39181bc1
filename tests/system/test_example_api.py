"""examples/api_app.py, driven by an HTTP client that never stores a cookie."""

from __future__ import annotations

from typing import Any

from aiohttp import DummyCookieJar

from examples import api_app


async def test_api_login_protected_route_and_logout_without_cookies(aiohttp_client: Any) -> None:
    client = await aiohttp_client(api_app.make_app("memory://"), cookie_jar=DummyCookieJar())
    response = await client.get("/me")
    assert response.status == 401
    response = await client.post("/login", json={"user": "ada", "password": "wrong"})
    assert response.status == 401
    response = await client.post("/login", json={"user": "ada", "password": "lovelace"})
    assert response.status == 200
    assert "Set-Cookie" not in response.headers
    token = (await response.json())["token"]
    assert token and response.headers["Session-Token"] == token
    auth = {"Authorization": f"Bearer {token}"}
    for calls in (1, 2):
        response = await client.get("/me", headers=auth)
        assert await response.json() == {"user": "ada", "calls": calls}
        assert "Set-Cookie" not in response.headers
    response = await client.post("/logout", headers=auth)
    assert response.headers["Session-Token"] == ""
    response = await client.get("/me", headers=auth)  # the old token is dead
    assert response.status == 401
