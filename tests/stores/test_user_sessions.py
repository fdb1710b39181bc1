"""A user's sessions (issue 23): binding on save, listing, ending one, ending all, the cap.

One body per behaviour, run on every server store (``server_store_factory``). Until a
driver implements ``ServerStore.replace`` (compare-and-swap), setup with ``user_key``
refuses it, naming the store, and these tests fail on it at setup. Every built-in driver
has it, MongoStore on FerretDB included (a lock document per swap there), so none skips.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import DummyCookieJar, web

from aiohttp_sessionkit import (
    AbstractStore,
    ConfigurationError,
    EncryptedCookieStore,
    MemoryStore,
    ServerStore,
    StoreUnavailable,
    end_session,
    end_user_sessions,
    generate_key,
    get_session,
    new_session,
    setup,
    user_sessions,
)
from tests.conftest import COOKIE, CountingStore, FakeClock, StoreFactory, set_cookies
from tests.harness.servers import ServerHandle
from tests.stores.test_faults import (  # noqa: F401 - server: the fixture the outage test uses
    DOWN_TIMEOUT,
    FAULT_KINDS,
    VOLATILE_KINDS,
    server,
    stopped,
)

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class LearnsOnOpeningStore(MemoryStore):
    """A third-party store whose server tells it only on opening that it cannot swap a
    record atomically (no built-in store does: MongoStore locks where its server's
    filtered updates are not atomic)."""

    swaps = True

    @property
    def merges(self) -> bool:
        return self.swaps

    async def open(self) -> None:
        await super().open()
        self.swaps = False


async def test_a_store_that_learns_on_opening_it_cannot_swap_is_refused_at_startup(
    aiohttp_client: Any,
) -> None:
    app = users_app(LearnsOnOpeningStore())  # setup cannot know yet: the store has not opened
    with pytest.raises(ConfigurationError, match="cannot swap a record atomically"):
        await aiohttp_client(app)


def users_app(store: AbstractStore, **options: Any) -> web.Application:
    """Sign in, read, write, list and end sessions; the user's id lives in ``user_id``."""
    app = web.Application()
    setup(app, store, user_key="user_id", **options)
    routes = web.RouteTableDef()

    @routes.post("/login/{user}")
    async def login(request: web.Request) -> web.Response:
        session = await new_session(request)
        user: str | int = request.match_info["user"]
        if request.can_read_body:  # a user id too long for a URL
            user = (await request.json())["user"]
        if request.query.get("int"):
            user = int(user)
        session["user_id"] = user
        return web.json_response({"ok": True})

    @routes.post("/regenerate")
    async def regenerate(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.regenerate()
        return web.json_response({"ok": True})

    @routes.get("/whoami")
    async def whoami(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response({"user": session.get("user_id")})

    @routes.post("/write")
    async def write(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["n"] = session.get("n", 0) + 1
        return web.json_response({"n": session["n"]})

    @routes.post("/set-user/{user}")
    async def set_user(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["user_id"] = request.match_info["user"]
        return web.json_response({"ok": True})

    @routes.post("/drop-user")
    async def drop_user(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.pop("user_id", None)
        session["anon"] = True
        return web.json_response({"ok": True})

    @routes.post("/logout")
    async def logout(request: web.Request) -> web.Response:
        (await get_session(request)).invalidate()
        return web.json_response({"ok": True})

    @routes.get("/sessions")
    async def sessions(request: web.Request) -> web.Response:
        session = await get_session(request)
        infos = await user_sessions(request, session["user_id"])
        return web.json_response(
            [
                {
                    "handle": i.handle,
                    "current": i.current,
                    "created": i.created.timestamp(),
                    "last_seen": i.last_seen.timestamp(),
                    "expires": i.expires.timestamp(),
                    "ua": i.user_agent,
                    "remote": i.remote,
                    "tz": str(i.created.tzinfo),
                }
                for i in infos
            ]
        )

    @routes.post("/end")
    async def end(request: web.Request) -> web.Response:
        handle = (await request.json())["handle"]
        return web.json_response({"ended": await end_session(request, handle)})

    @routes.post("/end-others")
    async def end_others(request: web.Request) -> web.Response:
        session = await get_session(request)
        n = await end_user_sessions(request, session["user_id"], keep_current=True)
        return web.json_response({"ended": n})

    @routes.post("/end-all")
    async def end_all(request: web.Request) -> web.Response:
        session = await get_session(request)
        n = await end_user_sessions(request, session["user_id"])
        return web.json_response({"ended": n})

    app.add_routes(routes)
    return app


class Device:
    """One browser: presents its own cookie, follows Set-Cookie."""

    def __init__(self, client: Any, user_agent: str = "pytest") -> None:
        self.client = client
        self.token: str | None = None
        self.user_agent = user_agent

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"User-Agent": self.user_agent}
        if self.token:
            headers["Cookie"] = f"{COOKIE}={self.token}"
        response = await self.client.request(method, path, headers=headers, json=body)
        morsel = set_cookies(response).get(COOKIE)
        if morsel is not None:
            self.token = morsel.value or None
        assert response.status == 200, (response.status, await response.text())
        return await response.json()

    async def user(self) -> Any:
        return (await self.call("GET", "/whoami"))["user"]

    async def end(self, handle: Any) -> bool:
        ended: bool = (await self.call("POST", "/end", {"handle": handle}))["ended"]
        return ended


async def devices(aiohttp_client: Any, app: web.Application, n: int) -> list[Device]:
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    return [Device(client, user_agent=f"device-{i}") for i in range(n)]


async def test_sessions_of_a_user_are_listed_newest_activity_first_with_the_current_marked(
    aiohttp_client: Any, server_store_factory: StoreFactory, clock: FakeClock
) -> None:
    app = users_app(server_store_factory(), record_client=True)
    a, b, c = await devices(aiohttp_client, app, 3)
    await a.call("POST", "/login/alice")
    clock.advance(10)
    await b.call("POST", "/login/alice")
    clock.advance(10)
    await c.call("POST", "/login/bob")
    clock.advance(10)
    await a.call("POST", "/write")  # a is now the most recently active

    listed = await b.call("GET", "/sessions")
    assert len(listed) == 2
    assert [s["current"] for s in listed] == [False, True]
    assert [s["ua"] for s in listed] == ["device-0", "device-1"]
    assert all(s["remote"] == "127.0.0.1" for s in listed)
    assert listed[0]["last_seen"] == clock.now and listed[1]["last_seen"] == clock.now - 20
    assert all(s["tz"] == "UTC" for s in listed)
    assert all(s["created"] < s["expires"] for s in listed)
    handles = {s["handle"] for s in listed}
    assert all(len(h) == 64 and a.token not in h and b.token not in h for h in handles)
    assert len(await c.call("GET", "/sessions")) == 1


async def test_client_details_are_not_recorded_unless_asked(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory())
    (a,) = await devices(aiohttp_client, app, 1)
    await a.call("POST", "/login/alice")
    (listed,) = await a.call("GET", "/sessions")
    assert listed["ua"] is None and listed["remote"] is None


async def test_a_long_user_agent_is_cut_to_256_characters(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory(), record_client=True)
    (a,) = await devices(aiohttp_client, app, 1)
    a.user_agent = "x" * 5000
    await a.call("POST", "/login/alice")
    (listed,) = await a.call("GET", "/sessions")
    assert listed["ua"] == "x" * 256


async def test_int_and_str_user_ids_name_the_same_user(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory())
    a, b = await devices(aiohttp_client, app, 2)
    await a.call("POST", "/login/42?int=1")
    await b.call("POST", "/login/42")
    assert await a.user() == 42
    assert len(await b.call("GET", "/sessions")) == 2


async def test_ending_all_others_keeps_the_current_session_and_signs_the_rest_out(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory())
    a, b, c, bob = await devices(aiohttp_client, app, 4)
    for device in (a, b, c):
        await device.call("POST", "/login/alice")
    await bob.call("POST", "/login/bob")
    assert (await a.call("POST", "/end-others"))["ended"] == 2
    assert await a.user() == "alice"
    assert await b.user() is None and await c.user() is None
    assert await bob.user() == "bob"
    assert [s["current"] for s in await a.call("GET", "/sessions")] == [True]


async def test_ending_all_without_keeping_ends_the_current_session_too(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory())
    a, b = await devices(aiohttp_client, app, 2)
    await a.call("POST", "/login/alice")
    old = a.token
    await b.call("POST", "/login/alice")
    assert (await a.call("POST", "/end-all"))["ended"] == 2
    assert a.token is None  # the response expired the cookie
    a.token = old  # a copy of the old cookie opens nothing either
    assert await a.user() is None and await b.user() is None


async def test_ending_one_session_by_handle_signs_out_only_that_device(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory())
    a, b, c = await devices(aiohttp_client, app, 3)
    for device in (a, b, c):
        await device.call("POST", "/login/alice")
    listed = await a.call("GET", "/sessions")
    target = next(s["handle"] for s in listed if not s["current"])
    assert await a.end(target) is True
    users = [await b.user(), await c.user()]
    assert sorted(users, key=str) == sorted(["alice", None], key=str)
    assert await a.user() == "alice"
    assert target not in {s["handle"] for s in await a.call("GET", "/sessions")}
    assert await a.end(target) is False  # already ended


async def test_ending_the_current_session_by_its_handle_signs_it_out(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory())
    (a,) = await devices(aiohttp_client, app, 1)
    await a.call("POST", "/login/alice")
    old = a.token
    (listed,) = await a.call("GET", "/sessions")
    assert await a.end(listed["handle"]) is True
    assert a.token is None
    a.token = old
    assert await a.user() is None


@pytest.mark.parametrize(
    "handle",
    [
        "0" * 64,  # well-formed, names nothing
        "a" * 63,  # wrong length
        "A" * 64,  # upper case: not a handle we make
        "z" * 64,  # not hex
        "../" * 30,
        "",
        "%00" * 10,
        "x" * 10_000,
        12345,
        None,
        ["a" * 64],
    ],
    ids=[
        "unknown",
        "short",
        "upper",
        "non-hex",
        "path",
        "empty",
        "nul",
        "10kb",
        "int",
        "null",
        "list",
    ],
)
async def test_a_forged_or_garbage_handle_ends_nothing(
    aiohttp_client: Any, server_store_factory: StoreFactory, handle: Any
) -> None:
    app = users_app(server_store_factory())
    a, b = await devices(aiohttp_client, app, 2)
    await a.call("POST", "/login/alice")
    await b.call("POST", "/login/bob")
    assert await a.end(handle) is False
    ended = await end_session(app, handle)
    assert ended is False
    assert await a.user() == "alice" and await b.user() == "bob"


async def test_a_handle_of_another_user_ends_nothing_from_a_request_but_does_from_the_app(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory())
    a, b = await devices(aiohttp_client, app, 2)
    await a.call("POST", "/login/alice")
    await b.call("POST", "/login/bob")
    (bobs,) = await b.call("GET", "/sessions")
    assert await a.end(bobs["handle"]) is False
    assert await b.user() == "bob"
    assert await end_session(app, bobs["handle"]) is True  # the administrator's tool
    assert await b.user() is None
    assert await a.user() == "alice"


async def test_a_handle_of_another_store_ends_nothing(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    other = web.Application()
    setup(other, MemoryStore(), user_key="user_id")
    other_client = await aiohttp_client(users_app(MemoryStore()), cookie_jar=DummyCookieJar())
    foreign = Device(other_client)
    await foreign.call("POST", "/login/alice")
    (theirs,) = await foreign.call("GET", "/sessions")
    app = users_app(server_store_factory())
    (a,) = await devices(aiohttp_client, app, 1)
    await a.call("POST", "/login/alice")
    assert await a.end(theirs["handle"]) is False
    assert await end_session(app, theirs["handle"]) is False
    assert await foreign.user() == "alice" and await a.user() == "alice"


async def test_an_index_record_cannot_be_ended_as_a_session(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    from aiohttp_sessionkit.abc import _user_index_key

    app = users_app(server_store_factory())
    (a,) = await devices(aiohttp_client, app, 1)
    await a.call("POST", "/login/alice")
    assert await end_session(app, _user_index_key(COOKIE, "alice")) is False
    assert len(await a.call("GET", "/sessions")) == 1


async def test_a_user_id_of_10_kb_lists_and_ends_its_own_sessions_only(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory())
    big = "u" * 10_240
    a, b, c = await devices(aiohttp_client, app, 3)
    await a.call("POST", "/login/body", {"user": big})
    await b.call("POST", "/login/body", {"user": big})
    await c.call("POST", "/login/body", {"user": "u" * 10_239})
    assert len(await user_sessions(app, big)) == 2
    assert await end_user_sessions(app, big) == 2
    assert await a.user() is None and await b.user() is None
    assert await c.user() == "u" * 10_239


async def test_a_user_id_over_the_limit_lists_nothing_and_ends_nothing(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory())
    (a,) = await devices(aiohttp_client, app, 1)
    await a.call("POST", "/login/alice")
    assert await user_sessions(app, "u" * 100_000) == []
    assert await end_user_sessions(app, "u" * 100_000) == 0
    assert await a.user() == "alice"


async def test_end_user_sessions_from_the_app_needs_no_request_and_refuses_keep_current(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory())
    a, b = await devices(aiohttp_client, app, 2)
    await a.call("POST", "/login/alice")
    await b.call("POST", "/login/bob")
    with pytest.raises(ValueError, match="keep_current=True needs the request"):
        await end_user_sessions(app, "alice", keep_current=True)
    assert await end_user_sessions(app, "alice") == 1
    assert await end_user_sessions(app, "alice") == 0
    assert await end_user_sessions(app, "nobody") == 0
    assert await a.user() is None and await b.user() == "bob"


async def test_logout_regenerate_and_dropping_the_user_remove_sessions_from_the_list(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory())
    a, b, c, d = await devices(aiohttp_client, app, 4)
    for device in (a, b, c, d):
        await device.call("POST", "/login/alice")
    await b.call("POST", "/logout")
    old_c = c.token
    await c.call("POST", "/regenerate")
    assert c.token != old_c
    await d.call("POST", "/drop-user")
    listed = await a.call("GET", "/sessions")
    assert len(listed) == 2  # a, and c under its new id
    assert await c.user() == "alice"
    # Nothing stale is left in the index itself: it names exactly the two live sessions.
    store = app_store(app)
    raw = await store.get(index_key("alice"))
    assert raw is not None and raw.count(b'":[') == 2


async def test_moving_a_session_to_another_user_moves_its_binding(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory())
    (a,) = await devices(aiohttp_client, app, 1)
    await a.call("POST", "/login/alice")
    await a.call("POST", "/set-user/bob")
    assert await user_sessions(app, "alice") == []
    assert len(await user_sessions(app, "bob")) == 1
    assert await end_user_sessions(app, "alice") == 0
    assert await a.user() == "bob"


async def test_a_user_set_on_an_anonymous_session_without_login_is_bound(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory())
    (a,) = await devices(aiohttp_client, app, 1)
    await a.call("POST", "/write")  # an anonymous session with a record
    await a.call("POST", "/set-user/alice")
    assert await end_user_sessions(app, "alice") == 1
    assert await a.user() is None


async def test_a_slower_request_cannot_bring_back_an_ended_session(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    store = server_store_factory()
    app = users_app(store)
    (a,) = await devices(aiohttp_client, app, 1)
    await a.call("POST", "/login/alice")

    slow = web.RouteTableDef()
    # A request that loaded the session before the end and saves after it.
    app2 = users_app(store)

    @slow.post("/slow")
    async def slow_write(request: web.Request) -> web.Response:
        session = await get_session(request)
        await end_user_sessions(app2, "alice")
        session["n"] = 99
        return web.json_response({"ok": True})

    app2.add_routes(slow)
    client2 = await aiohttp_client(app2, cookie_jar=DummyCookieJar())
    response = await client2.post("/slow", headers={"Cookie": f"{COOKIE}={a.token}"})
    assert response.status == 200
    assert COOKIE not in set_cookies(response)
    assert await a.user() is None
    assert await user_sessions(app2, "alice") == []


async def test_max_sessions_per_user_ends_the_least_recently_active(
    aiohttp_client: Any, server_store_factory: StoreFactory, clock: FakeClock
) -> None:
    app = users_app(server_store_factory(), max_sessions_per_user=2)
    a, b, c = await devices(aiohttp_client, app, 3)
    await a.call("POST", "/login/alice")
    clock.advance(5)
    await b.call("POST", "/login/alice")
    clock.advance(5)
    await a.call("POST", "/write")  # b is now the least recently active
    clock.advance(5)
    await c.call("POST", "/login/alice")
    assert await a.user() == "alice" and await c.user() == "alice"
    assert await b.user() is None
    assert len(await a.call("GET", "/sessions")) == 2


async def test_the_cap_counts_live_sessions_only(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    app = users_app(server_store_factory(), max_sessions_per_user=2)
    a, b, c = await devices(aiohttp_client, app, 3)
    await a.call("POST", "/login/alice")
    await b.call("POST", "/login/alice")
    await b.call("POST", "/logout")
    await c.call("POST", "/login/alice")
    assert await a.user() == "alice" and await c.user() == "alice"


async def test_a_user_with_more_sessions_than_the_ceiling_keeps_the_newest(
    aiohttp_client: Any, server_store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = server_store_factory()
    # The ceiling, lowered on this store object for speed: the same code as at 1,000.
    store.user_index_limit = 20  # type: ignore[attr-defined]
    app = users_app(store)
    logins = await devices(aiohttp_client, app, 30)
    for device in logins:
        await device.call("POST", "/login/alice")
        clock.advance(1)
    listed = await user_sessions(app, "alice")
    assert len(listed) == 20
    assert [await d.user() for d in logins[:10]] == [None] * 10
    assert [await d.user() for d in logins[10:]] == ["alice"] * 20


async def test_reads_and_writes_that_keep_the_binding_make_no_extra_store_call(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    inner = server_store_factory()
    counting = IndexCountingStore(inner)
    app = users_app(counting)
    (a,) = await devices(aiohttp_client, app, 1)
    await a.call("POST", "/login/alice")
    assert counting.binds == 1
    counting.reset()
    await a.user()
    await a.call("POST", "/write")
    await a.call("POST", "/write")
    assert (counting.loads, counting.saves, counting.deletes, counting.index_calls) == (3, 2, 0, 0)
    await a.call("POST", "/logout")
    assert counting.unbinds == 1


async def test_without_user_key_nothing_is_indexed(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    store = server_store_factory()
    counting = IndexCountingStore(store)
    app = web.Application()
    setup(app, counting)

    async def login(request: web.Request) -> web.Response:
        (await new_session(request))["user_id"] = "alice"
        return web.json_response({})

    app.router.add_post("/login", login)
    client = await aiohttp_client(app)
    assert (await client.post("/login")).status == 200
    assert counting.index_calls == 0
    with pytest.raises(ConfigurationError, match="user_key"):
        await user_sessions(app, "alice")


def app_store(app: web.Application) -> Any:
    from aiohttp_sessionkit.api import _APP_REGISTRY

    store = app[_APP_REGISTRY].default.store
    return store.inner if isinstance(store, IndexCountingStore) else store


def index_key(user: str) -> str:
    from aiohttp_sessionkit.abc import _user_index_key

    return _user_index_key(COOKIE, user)


class IndexCountingStore(CountingStore):
    """CountingStore that also forwards, and counts, the user-index capability."""

    def __init__(self, inner: AbstractStore) -> None:
        super().__init__(inner)
        self.reset()

    def reset(self) -> None:
        self.loads = self.saves = self.deletes = 0
        self.binds = self.unbinds = self.others = 0

    @property
    def index_calls(self) -> int:
        return self.binds + self.unbinds + self.others

    @property
    def user_index(self) -> bool:
        return self.inner.user_index

    def handle(self, token: str, *, namespace: str) -> str | None:
        return self.inner.handle(token, namespace=namespace)

    async def bind_user(self, *args: Any, **kwargs: Any) -> int:
        self.binds += 1
        return await self.inner.bind_user(*args, **kwargs)

    async def unbind_user(self, *args: Any, **kwargs: Any) -> None:
        self.unbinds += 1
        await self.inner.unbind_user(*args, **kwargs)

    async def user_records(self, *args: Any, **kwargs: Any) -> Any:
        self.others += 1
        return await self.inner.user_records(*args, **kwargs)

    async def end_user(self, *args: Any, **kwargs: Any) -> int:
        self.others += 1
        return await self.inner.end_user(*args, **kwargs)


class NoSwapStore(ServerStore):
    """A third-party store written before compare-and-swap: no replace()."""

    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.records.get(key)

    async def create(self, key: str, data: bytes, ttl: int) -> bool:
        return self.records.setdefault(key, data) is data

    async def update(self, key: str, data: bytes, ttl: int) -> bool:
        if key not in self.records:
            return False
        self.records[key] = data
        return True

    async def remove(self, key: str) -> None:
        self.records.pop(key, None)


@pytest.mark.parametrize(
    ("store", "options", "message"),
    [
        (MemoryStore(), {"user_key": ""}, "user_key='': give the session key"),
        (MemoryStore(), {"user_key": 5}, "user_key=5: give the session key"),
        (MemoryStore(), {"user_key": "u", "max_sessions_per_user": 0}, "from 1 to 1000"),
        (MemoryStore(), {"user_key": "u", "max_sessions_per_user": 1001}, "from 1 to 1000"),
        (MemoryStore(), {"user_key": "u", "max_sessions_per_user": True}, "from 1 to 1000"),
        (MemoryStore(), {"user_key": "u", "max_sessions_per_user": "5"}, "from 1 to 1000"),
        (MemoryStore(), {"max_sessions_per_user": 5}, "max_sessions_per_user needs user_key"),
        (MemoryStore(), {"record_client": True}, "record_client needs user_key"),
        (MemoryStore(), {"user_key": "u", "record_client": "yes"}, "give True or False"),
        (NoSwapStore(), {"user_key": "u"}, "NoSwapStore has no replace"),
        (EncryptedCookieStore(generate_key()), {"user_key": "u"}, "deny list"),
    ],
    ids=[
        "empty-key", "int-key", "cap-0", "cap-over-ceiling", "cap-bool", "cap-str",
        "cap-without-key", "client-without-key", "client-not-bool", "no-replace", "cookie",
    ],
)  # fmt: skip
def test_user_options_that_cannot_work_fail_at_setup_saying_how_to_fix_them(
    store: AbstractStore, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        setup(web.Application(), store, **options)


async def test_the_api_without_user_key_says_to_set_it() -> None:
    app = web.Application()
    setup(app, MemoryStore())
    with pytest.raises(ConfigurationError, match="user_key"):
        await user_sessions(app, "alice")
    with pytest.raises(RuntimeError, match="setup"):
        await end_user_sessions(web.Application(), "alice")


@pytest.mark.slow
@pytest.mark.parametrize("server_store_factory", FAULT_KINDS, indirect=True)
async def test_a_users_sessions_answer_503_while_the_store_is_down_and_end_nothing_silently(
    aiohttp_client: Any,
    server_store_factory: StoreFactory,
    server: ServerHandle,  # noqa: F811
) -> None:
    app = users_app(server_store_factory(), store_timeout=DOWN_TIMEOUT)
    a, b = await devices(aiohttp_client, app, 2)
    await a.call("POST", "/login/alice")
    await b.call("POST", "/login/alice")
    headers = {"Cookie": f"{COOKIE}={a.token}"}
    async with stopped(server):
        for method, path in [("GET", "/sessions"), ("POST", "/end-others")]:
            response = await a.client.request(method, path, headers=headers)
            assert response.status == 503
            assert "Set-Cookie" not in response.headers
        with pytest.raises(StoreUnavailable):
            await end_user_sessions(app, "alice")
        with pytest.raises(StoreUnavailable):
            await user_sessions(app, "alice")
    if server_store_factory.kind not in VOLATILE_KINDS:  # the sessions survived the outage
        assert await a.user() == "alice" and await b.user() == "alice"
        assert len(await user_sessions(app, "alice")) == 2


async def test_signing_in_again_without_reading_the_session_unbinds_the_old_one(
    aiohttp_client: Any, server_store_factory: StoreFactory
) -> None:
    # The login route calls new_session() without loading the session first: the session
    # layer must learn whose session it ends, or the index keeps a stale entry.
    app = users_app(server_store_factory())
    (a,) = await devices(aiohttp_client, app, 1)
    await a.call("POST", "/login/alice")
    first = a.token
    await a.call("POST", "/login/alice")
    assert a.token != first
    raw = await app_store(app).get(index_key("alice"))  # before any listing cleans it
    assert raw is not None and raw.count(b'":[') == 1
    assert [s["current"] for s in await a.call("GET", "/sessions")] == [True]
