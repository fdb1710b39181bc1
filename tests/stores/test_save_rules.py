"""The save rules (middleware.Slot.plan) and the synchronous path around them.

* ``commit`` and the synchronous commit (``commit_now``) carry out the same rules: the same
  records and the same token headers for every combination of what a request can do;
* a store's synchronous twins (abc.mirrors) never bypass a ``load`` or ``save`` that was
  replaced at class level, as instrumentation and test spies do.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient

from aiohttp_sessionkit import AbstractStore, get_session, new_session, setup
from aiohttp_sessionkit.middleware import Slot
from aiohttp_sessionkit.serializers import JSONSerializer
from tests.conftest import COOKIE, FakeClock, StoreFactory, Wire, set_cookies

AppClient = TestClient[web.Request, web.Application]
JSON = JSONSerializer()
IDLE = 3600
ABSOLUTE = 7200
TOUCH = 60

#: What one request does to its session, in this order (each one on or off).
STEPS = ("new", "changed", "regenerated", "invalidated", "flash", "touch")
COMBINATIONS = [
    dict(zip(STEPS, flags, strict=True)) for flags in itertools.product((False, True), repeat=6)
]


def _ids(case: dict[str, bool]) -> str:
    return "+".join(step for step, on in case.items() if on) or "read"


def _app(store: AbstractStore, wire: Wire) -> web.Application:
    async def login(request: web.Request) -> web.Response:
        session = await new_session(request)
        session["user"] = "alice"
        session.flash("welcome")
        return web.Response(text="ok")

    async def act(request: web.Request) -> web.Response:
        session = await get_session(request)
        steps = set(request.query.getall("step", []))
        if "regenerated" in steps:
            session.regenerate()
        if "invalidated" in steps:
            session.invalidate()
        if "changed" in steps:
            session["n"] = session.get("n", 0) + 1
        if "flash" in steps:
            session.flash("saved")
        return web.Response(text="ok")

    app = web.Application()
    setup(
        app,
        store,
        idle_timeout=IDLE,
        absolute_timeout=ABSOLUTE,
        touch_interval=TOUCH,
        **wire.options,
    )
    app.router.add_post("/login", login)
    app.router.add_post("/act", act)
    return app


def _opened(
    store: AbstractStore, payload: Any, t0: int, lineages: dict[str, str]
) -> dict[str, Any] | None:
    """A stored session as comparable values: times from ``t0``, random lineage ids named in
    order of appearance."""
    if payload is None:
        return None
    session = store.restore(
        payload, JSON, identity=None, idle_timeout=IDLE, absolute_timeout=ABSOLUTE
    )
    if session is None:
        return None
    lineage = session._lineage
    return {
        "data": dict(session),
        "flashes": list(session._flashes),
        "created": session.created - t0,
        "accessed": session.last_access - t0,
        "max_age": session.max_age,
        "lineage": None if lineage is None else lineages.setdefault(lineage, f"L{len(lineages)}"),
    }


async def _scenario(
    client: AppClient, store: AbstractStore, wire: Wire, clock: FakeClock, case: dict[str, bool]
) -> dict[str, Any]:
    """Run one request doing ``case``; what it sent and what the store holds afterwards."""
    lineages: dict[str, str] = {}
    t0 = clock.now
    old = None
    if not case["new"]:
        old = wire.issued(await client.post("/login"))
        assert old is not None
    if case["touch"]:
        clock.advance(TOUCH + 1)
    steps = [step for step in ("changed", "regenerated", "invalidated", "flash") if case[step]]
    response = await client.post(
        "/act", params=[("step", s) for s in steps], headers=wire.present(old)
    )
    assert response.status == 200
    issued = wire.issued(response)
    headers = {
        name: sorted(response.headers.getall(name, [])) for name in ("Cache-Control", "Vary")
    }
    morsel = set_cookies(response).get(wire.name)
    if morsel is not None:  # every attribute; of the value, whether it is empty
        headers["Set-Cookie"] = [f"{k}={morsel[k]}" for k in sorted(morsel) if morsel[k]]
        headers["Set-Cookie"].append(f"empty={not morsel.value}")
    loaded_old = None if old is None else await store.load(old, namespace=COOKIE)
    loaded_new = None if issued is None else await store.load(issued, namespace=COOKIE)
    return {
        "token": "none" if issued is None else ("same" if issued == old else "new"),
        "cleared": wire.cleared(response),
        "headers": headers,
        "old record": _opened(store, loaded_old, t0, lineages),
        "new record": _opened(store, loaded_new, t0, lineages),
    }


@pytest.mark.parametrize("store_factory", ["memory", "cookie", "jwt"], indirect=True)
async def test_commit_and_the_synchronous_commit_save_the_same_for_every_request(
    store_factory: StoreFactory,
    wire: Wire,
    clock: FakeClock,
    aiohttp_client: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = store_factory()
    synchronous: list[bool] = []
    commit_now = Slot.commit_now

    def recording(self: Slot, request: web.Request, action: Any) -> bool:
        done = commit_now(self, request, action)
        synchronous.append(done)
        return done

    monkeypatch.setattr(Slot, "commit_now", recording)
    client = await aiohttp_client(_app(store, wire), cookie_jar=DummyCookieJar())
    fast = {}
    for case in COMBINATIONS:
        fast[_ids(case)] = await _scenario(client, store, wire, clock, case)
    # The plain update of an existing session went through the synchronous path.
    assert any(synchronous)

    # The same requests, with the synchronous path turned off: commit() does every save.
    monkeypatch.setattr(Slot, "commit_now", lambda self, request, action: False)
    slow = {}
    for case in COMBINATIONS:
        slow[_ids(case)] = await _scenario(client, store, wire, clock, case)
    for name in fast:
        assert fast[name] == slow[name], name
    # And the rules did something in both: an update keeps the data, a logout empties it.
    assert fast["changed"]["new record" if store.client_side else "old record"]["data"] == {
        "user": "alice",
        "n": 1,
    }
    assert fast["invalidated"]["cleared"]


def _spy(
    monkeypatch: pytest.MonkeyPatch, cls: type[AbstractStore], name: str, calls: list[str]
) -> None:
    """Replace ``cls.<name>`` by a wrapper that records each call (as wrapt or a test spy)."""
    original = getattr(cls, name)

    @functools.wraps(original)
    async def wrapper(self: AbstractStore, *args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)


@pytest.mark.parametrize("operation", ["load", "save"])
async def test_a_class_level_wrapper_of_load_or_save_sees_every_call(
    store: AbstractStore,
    operation: str,
    aiohttp_client: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    _spy(monkeypatch, type(store), operation, calls)

    async def write(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["n"] = session.get("n", 0) + 1
        return web.json_response(session["n"])

    async def read(request: web.Request) -> web.Response:
        return web.json_response((await get_session(request)).get("n"))

    app = web.Application()
    setup(app, store)
    app.router.add_post("/write", write)
    app.router.add_get("/read", read)
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    wire = Wire("cookie")
    token = wire.issued(await client.post("/write"))  # creates: one save, nothing to load
    for expected in (2, 3):  # updates: one load, one save each
        response = await client.post("/write", headers=wire.present(token))
        assert await response.json() == expected
        token = wire.follow(response, token)
    response = await client.get("/read", headers=wire.present(token))  # one load
    assert await response.json() == 3
    assert calls == [operation] * 3
