"""seed_session() and read_session(): testing an application's handlers that use sessions."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from aiohttp_sessionkit import (
    AbstractStore,
    EncryptedCookieStore,
    HeaderTransport,
    MemoryStore,
    SerializationError,
    generate_key,
    get_session,
    setup,
)
from aiohttp_sessionkit.testing import read_session, seed_session

LOCAL_STORES: dict[str, Callable[[], AbstractStore]] = {
    "memory": MemoryStore,
    "cookie": lambda: EncryptedCookieStore(generate_key()),
}


async def add_to_cart(request: web.Request) -> web.Response:
    session = await get_session(request)
    if "user" not in session:
        raise web.HTTPForbidden(text="sign in first")
    session["items"] = [*session.get("items", []), request.match_info["item"]]
    return web.Response(text=f"{session['user']}: {len(session['items'])} items")


async def sign_out(request: web.Request) -> web.Response:
    (await get_session(request)).invalidate()
    return web.Response(text="bye")


async def theme(request: web.Request) -> web.Response:
    prefs = await get_session(request, "prefs")
    prefs["seen"] = prefs.get("theme", "light")
    return web.Response(text=str(prefs["seen"]))


def shop(store: AbstractStore) -> web.Application:
    app = web.Application()
    setup(app, store)
    setup(app, MemoryStore(), cookie_name="prefs")
    app.router.add_post("/cart/{item}", add_to_cart)
    app.router.add_post("/logout", sign_out)
    app.router.add_get("/theme", theme)
    return app


@pytest.fixture(params=sorted(LOCAL_STORES))
def store(request: pytest.FixtureRequest) -> AbstractStore:
    built: AbstractStore = LOCAL_STORES[request.param]()
    return built


async def test_a_seeded_session_reaches_the_handler_and_what_it_stored_can_be_read(
    aiohttp_client: AiohttpClient, store: AbstractStore
) -> None:
    client = await aiohttp_client(shop(store))
    assert (await client.post("/cart/apple")).status == 403  # no session yet
    assert await read_session(client) is None
    await seed_session(client, {"user": "ada", "items": ["pear"]})
    response = await client.post("/cart/apple")
    assert await response.text() == "ada: 2 items"
    assert await read_session(client) == {"user": "ada", "items": ["pear", "apple"]}
    response = await client.post("/cart/fig")
    assert await response.text() == "ada: 3 items"
    assert await read_session(client) == {"user": "ada", "items": ["pear", "apple", "fig"]}


async def test_read_session_is_none_after_the_handler_signs_out(
    aiohttp_client: AiohttpClient, store: AbstractStore
) -> None:
    client = await aiohttp_client(shop(store))
    token = await seed_session(client, {"user": "ada"})
    assert await read_session(client) == {"user": "ada"}
    assert await (await client.post("/logout")).text() == "bye"
    assert await read_session(client) is None
    if not store.client_side:  # the record itself is gone from the store
        assert await store.load(token, namespace="AIOHTTP_SESSION") is None


async def test_a_named_session_is_seeded_and_read_by_its_cookie_name(
    aiohttp_client: AiohttpClient, store: AbstractStore
) -> None:
    client = await aiohttp_client(shop(store))
    await seed_session(client, {"theme": "dark"}, name="prefs")
    assert await (await client.get("/theme")).text() == "dark"
    assert await read_session(client, name="prefs") == {"theme": "dark", "seen": "dark"}
    assert await read_session(client) is None  # the default session was never touched


async def test_helpers_say_what_is_missing(aiohttp_client: AiohttpClient) -> None:
    bare = await aiohttp_client(web.Application())
    with pytest.raises(RuntimeError, match=r"aiohttp_sessionkit\.setup"):
        await seed_session(bare, {"user": "ada"})
    app = web.Application()
    setup(app, MemoryStore(), transport=HeaderTransport())
    api = await aiohttp_client(app)
    with pytest.raises(RuntimeError, match="does not travel in a cookie"):
        await read_session(api)
    with pytest.raises(KeyError, match="no session is set up under the cookie name 'nope'"):
        await seed_session(api, {}, name="nope")


async def test_seeded_data_follows_the_serializer_rules_of_a_handlers_writes(
    aiohttp_client: AiohttpClient, store: AbstractStore
) -> None:
    client = await aiohttp_client(shop(store))
    with pytest.raises(SerializationError, match="when"):
        await seed_session(client, {"user": "ada", "when": object()})
    assert await read_session(client) is None  # nothing half-seeded
