"""aiohttp-security on our sessions, end to end with the real aiohttp-security package."""

from __future__ import annotations

import subprocess
import sys
from enum import Enum
from typing import Any

import pytest
from aiohttp import web
from aiohttp_security import (
    AbstractAuthorizationPolicy,
    check_authorized,
    check_permission,
    forget,
    is_anonymous,
    remember,
)
from aiohttp_security import setup as setup_security

from aiohttp_sessionkit import (
    AbstractStore,
    ConfigurationError,
    end_user_sessions,
    get_session,
    setup,
    user_sessions,
)
from aiohttp_sessionkit.security import SessionIdentityPolicy
from tests.conftest import StoreFactory, Wire
from tests.harness import REPO_ROOT
from tests.stores.test_contract import COOKIE, client_for, cookie_value, token_of, with_cookie

USERS = {"alice": {"read", "write"}, "bob": {"read"}}


class Permissions(AbstractAuthorizationPolicy):
    """Users and their permissions from a dict, as in aiohttp-security's demo."""

    async def authorized_userid(self, identity: str) -> str | None:
        return identity if identity in USERS else None

    async def permits(
        self, identity: str | None, permission: str | Enum, context: Any = None
    ) -> bool:
        return identity is not None and permission in USERS.get(identity, set())


def security_app(store: AbstractStore, **options: Any) -> web.Application:
    app = web.Application()
    setup(app, store, **options)
    setup_security(app, SessionIdentityPolicy(), Permissions())

    async def login(request: web.Request) -> web.Response:
        user = request.query["user"]
        if user not in USERS:
            raise web.HTTPForbidden(text="unknown user")
        response = web.HTTPFound("/me")
        await remember(request, response, user)
        raise response

    async def logout(request: web.Request) -> web.Response:
        await check_authorized(request)
        response = web.Response(text="bye")
        await forget(request, response)
        return response

    async def me(request: web.Request) -> web.Response:
        return web.Response(text=await check_authorized(request))

    async def write(request: web.Request) -> web.Response:
        await check_permission(request, "write")
        return web.Response(text="written")

    async def anonymous(request: web.Request) -> web.Response:
        return web.json_response(await is_anonymous(request))

    async def add_to_cart(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["cart"] = [*session.get("cart", []), request.query["item"]]
        return web.Response(text="added")

    async def cart(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response(session.get("cart", []))

    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/me", me)
    app.router.add_post("/write", write)
    app.router.add_get("/anonymous", anonymous)
    app.router.add_post("/cart", add_to_cart)
    app.router.add_get("/cart", cart)
    return app


@pytest.mark.parametrize("store_factory", ["cookie", "memory", "redis"], indirect=True)
async def test_login_permissions_and_logout_with_aiohttp_security(
    aiohttp_client: Any, store_factory: StoreFactory, wire: Wire
) -> None:
    client = await client_for(aiohttp_client, security_app(store_factory(), **wire.options))

    async def status(method: str, path: str, token: str | None) -> int:
        response = await client.request(method, path, headers=wire.present(token))
        code: int = response.status
        return code

    async def cart(token: str) -> Any:
        return await (await client.get("/cart", headers=wire.present(token))).json()

    # Anonymous: 401 for what needs a login, and a permission check refuses.
    assert await status("GET", "/me", None) == 401
    assert await status("POST", "/write", None) == 401
    assert await (await client.get("/anonymous")).json() is True

    # A session exists before login (a cart; or one an attacker planted in the browser).
    before_login = token_of(wire, await client.post("/cart", params={"item": "book"}))

    response = await client.post(
        "/login", params={"user": "alice"}, headers=wire.present(before_login),
        allow_redirects=False,
    )  # fmt: skip
    assert response.status == 302
    alice = token_of(wire, response)
    assert alice != before_login
    assert response.headers["Cache-Control"] == "private"

    me = await client.get("/me", headers=wire.present(alice))
    assert await me.text() == "alice"
    anonymous = await client.get("/anonymous", headers=wire.present(alice))
    assert await anonymous.json() is False
    assert await status("POST", "/write", alice) == 200
    # The session kept its data across the login, under the new id.
    assert await cart(alice) == ["book"]
    # The id known before login does not carry the login.
    assert await status("GET", "/me", before_login) == 401
    if not store_factory.client_side:
        # ...and it is dead: its record was deleted when the session moved.
        assert await cart(before_login) == []

    response = await client.post("/login", params={"user": "bob"}, allow_redirects=False)
    bob = token_of(wire, response)
    assert await status("GET", "/me", bob) == 200
    assert await status("POST", "/write", bob) == 403  # authorized, not permitted

    response = await client.post("/logout", headers=wire.present(alice))
    assert response.status == 200
    assert wire.cleared(response)  # the client is told to drop its token
    if store_factory.client_side:
        # The cookie store cannot revoke: a copy of the token taken before logout still
        # opens until it expires (documented; use a server-side store to revoke).
        assert await status("GET", "/me", alice) == 200
    else:
        assert await status("GET", "/me", alice) == 401
        assert await cart(alice) == []
    assert await status("GET", "/me", bob) == 200  # other users are unaffected


async def status(client: Any, method: str, path: str, cookie: str | None) -> int:
    response = await client.request(method, path, headers=with_cookie(cookie) if cookie else {})
    code: int = response.status
    return code


async def test_unknown_user_login_sets_nothing(aiohttp_client: Any) -> None:
    from aiohttp_sessionkit import MemoryStore

    client = await client_for(aiohttp_client, security_app(MemoryStore()))
    response = await client.post("/login", params={"user": "mallory"}, allow_redirects=False)
    assert response.status == 403
    assert "Set-Cookie" not in response.headers


async def test_identify_ignores_a_non_string_value_under_the_key(aiohttp_client: Any) -> None:
    from aiohttp_sessionkit import MemoryStore

    app = security_app(MemoryStore())

    async def plant(request: web.Request) -> web.Response:
        (await get_session(request))["AIOHTTP_SECURITY"] = {"user": "alice"}
        return web.Response(text="planted")

    app.router.add_post("/plant", plant)
    client = await client_for(aiohttp_client, app)
    cookie = cookie_value(await client.post("/plant"))
    assert await status(client, "GET", "/me", cookie) == 401


def test_policy_is_an_aiohttp_security_identity_policy_with_a_checked_key() -> None:
    from aiohttp_security.abc import AbstractIdentityPolicy

    assert isinstance(SessionIdentityPolicy(), AbstractIdentityPolicy)
    assert SessionIdentityPolicy("user_id").session_key == "user_id"
    with pytest.raises(ConfigurationError, match="session_key"):
        SessionIdentityPolicy("")


def test_importing_the_package_does_not_import_aiohttp_security() -> None:
    code = "import sys, aiohttp_sessionkit; print('aiohttp_security' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=REPO_ROOT,
    )  # fmt: skip
    assert out.stdout.strip() == "False"


async def test_the_security_example_app_behaves_like_aiohttp_security_demo(
    aiohttp_client: Any,
) -> None:
    from examples import security_app

    # The test client keeps cookies like a browser does.
    client = await aiohttp_client(security_app.make_app())
    assert "NOT logged in" in await (await client.get("/")).text()
    assert (await client.get("/listen")).status == 401
    assert (await client.get("/speak")).status == 401

    response = await client.post("/login")  # follows the redirect to /
    assert response.status == 200
    assert "now logged in" in await response.text()
    assert await (await client.get("/listen")).text() == "I can listen!"
    assert (await client.get("/speak")).status == 403
    logged_in = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value

    response = await client.post("/logout")
    assert "NOT logged in" in await response.text()
    assert (await client.get("/listen")).status == 401
    # The session Jack logged in with is gone from the store, not just emptied.
    replay = await client.get("/listen", headers=with_cookie(logged_in))
    assert replay.status == 401


async def test_remember_binds_the_session_to_the_user_when_user_key_is_the_policys_key(
    aiohttp_client: Any,
    server_store_factory: StoreFactory,
) -> None:
    app = security_app(server_store_factory(), user_key="AIOHTTP_SECURITY")
    client = await client_for(aiohttp_client, app)
    phone = cookie_value(await client.post("/login?user=alice", allow_redirects=False))
    laptop = cookie_value(await client.post("/login?user=alice", allow_redirects=False))
    bob = cookie_value(await client.post("/login?user=bob", allow_redirects=False))
    assert len(await user_sessions(app, "alice")) == 2
    assert (await client.post("/logout", headers=with_cookie(phone))).status == 200
    assert len(await user_sessions(app, "alice")) == 1
    # The password-change recipe, from an administrator's side: every session of alice ends.
    assert await end_user_sessions(app, "alice") == 1
    assert (await client.get("/me", headers=with_cookie(laptop))).status == 401
    assert await (await client.get("/me", headers=with_cookie(bob))).text() == "bob"
