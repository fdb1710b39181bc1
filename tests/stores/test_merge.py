"""No lost updates: requests that loaded one session and save it concurrently all keep their
changes, on every server store (issue 24).

Each rule is forced deterministically: the slow request loads the session, makes its changes
and then waits on an event until the fast request has finished (its save committed); only
then does the slow request save. So the slow request's save is always the later one. The
tests run over every server store kind; a kind whose driver has no ``replace`` yet keeps
the last-writer-wins save and fails here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from aiohttp_sessionkit import (
    AbstractStore,
    EncryptedCookieStore,
    MemoryStore,
    ServerStore,
    generate_key,
    get_session,
    setup,
)
from aiohttp_sessionkit.abc import Merge, mirrors
from aiohttp_sessionkit.api import _APP_REGISTRY
from aiohttp_sessionkit.middleware import SessionConfig
from aiohttp_sessionkit.serializers import JSONSerializer
from aiohttp_sessionkit.session import Session, decode_payload, encode_payload, merge_changes, now
from tests.conftest import SERVER_STORE_KINDS, CountingStore, StoreFactory, _factory
from tests.harness.cluster_servers import _KillableRedis
from tests.stores.test_contract import COOKIE_WIRE, client_for
from tests.stores.test_testing_kit import DictStore, MergingDictStore

#: Every server store kind, and RedisStore through Redis Sentinel.
MERGE_KINDS = [*SERVER_STORE_KINDS, "redis-sentinel"]
#: MemoryStore merges in one step with nothing in between: it cannot lose a race.
CONTENDED_KINDS = [kind for kind in MERGE_KINDS if kind != "memory"]
CONCURRENT = 50
ROUNDS = 20


async def _merging_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    kind = request.param
    if kind != "redis-sentinel":
        async for factory in _factory(request, kind):
            yield factory
        return
    from aiohttp_sessionkit.stores.redis import RedisStore

    url = request.getfixturevalue("redis_sentinel_servers").url
    prefix = f"merge-{uuid.uuid4().hex[:8]}:"
    factory = StoreFactory(kind, lambda: RedisStore(url, key_prefix=prefix))
    yield factory
    for store in factory.built:
        await store.close()


@pytest.fixture(params=MERGE_KINDS)
async def merging_store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Each server store kind (parametrized), Redis Sentinel included."""
    async for factory in _merging_factory(request):
        yield factory


@pytest.fixture(params=CONTENDED_KINDS)
async def contended_store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """The server store kinds whose merge compares and swaps over the network."""
    async for factory in _merging_factory(request):
        yield factory


class Hold:
    """The slow request sets ``loaded`` once it has made its changes, then waits for
    ``release`` before its response (and so its save) goes out."""

    def __init__(self) -> None:
        self.loaded = asyncio.Event()
        self.release = asyncio.Event()


HOLD = web.AppKey("hold", Hold)


async def _apply(session: Any, ops: list[list[Any]]) -> list[Any]:
    """Carry out ``ops`` on ``session``; return the flashes shown."""
    shown: list[Any] = []
    for op, *args in ops:
        if op == "set":
            session[args[0]] = args[1]
        elif op == "del":
            del session[args[0]]
        elif op == "append":  # a nested value changed in place
            session[args[0]].append(args[1])
            session.changed()
        elif op == "flash":
            session.flash(args[0])
        elif op == "show":
            shown += session.pop_flashes()
        elif op == "max_age":
            session.max_age = args[0]
        elif op == "logout":
            session.invalidate()
        elif op == "regenerate":
            session.regenerate()
        else:
            raise AssertionError(f"unknown op {op!r}")
    return shown


def merge_app(store: AbstractStore) -> web.Application:
    app = web.Application()
    setup(app, store)
    app[HOLD] = Hold()

    async def op(request: web.Request) -> web.Response:
        session = await get_session(request)
        # The handler's own I/O (a query, a call to another service): other requests of
        # the session load and save meanwhile, as in production.
        await asyncio.sleep(0.001)
        shown = await _apply(session, await request.json())
        if request.query.get("hold"):
            hold = request.app[HOLD]
            hold.loaded.set()
            await hold.release.wait()
        return web.json_response({"shown": shown})

    async def peek(request: web.Request) -> web.Response:
        # Shows (and so removes) the flashes: a second peek sees each one gone.
        session = await get_session(request)
        return web.json_response(
            {"data": dict(session), "flashes": session.pop_flashes(), "max_age": session.max_age}
        )

    async def stream(request: web.Request) -> web.StreamResponse:
        # Saved twice in one request: when the response is prepared, and after the handler.
        session = await get_session(request)
        session.flash("one")
        hold = request.app[HOLD]
        hold.loaded.set()
        await hold.release.wait()
        response = web.StreamResponse()
        await response.prepare(request)
        session["after"] = "prepare"
        await response.write(b"streamed")
        return response

    app.router.add_post("/op", op)
    app.router.add_post("/stream", stream)
    app.router.add_post("/peek", peek)
    return app


async def start(client: Any, data: dict[str, Any], flashes: tuple[str, ...] = ()) -> str:
    ops: list[list[Any]] = [["set", key, value] for key, value in data.items()]
    ops += [["flash", message] for message in flashes]
    response = await client.post("/op", json=ops)
    assert response.status == 200
    token = COOKIE_WIRE.issued(response)
    assert token is not None
    return token


async def race(
    client: Any, token: str, slow: list[list[Any]], fast: list[list[Any]]
) -> tuple[Any, Any]:
    """The slow request loads and changes the session, the fast one then runs to the end,
    and only then is the slow one's save let go. Both responses, slow first."""
    hold = client.app[HOLD]
    hold.loaded.clear()
    hold.release.clear()
    headers = COOKIE_WIRE.present(token)
    pending = asyncio.ensure_future(client.post("/op?hold=1", json=slow, headers=headers))
    await asyncio.wait_for(hold.loaded.wait(), 10)
    fast_response = await client.post("/op", json=fast, headers=headers)
    hold.release.set()
    slow_response = await asyncio.wait_for(pending, 30)
    return slow_response, fast_response


async def peek(client: Any, token: str | None) -> dict[str, Any]:
    response = await client.post("/peek", headers=COOKIE_WIRE.present(token))
    assert response.status == 200
    result: dict[str, Any] = await response.json()
    return result


@pytest.fixture
async def client(aiohttp_client: Any, merging_store_factory: StoreFactory) -> Any:
    return await client_for(aiohttp_client, merge_app(merging_store_factory()))


async def test_changes_to_different_keys_are_all_kept(client: Any) -> None:
    token = await start(client, {"x": 0})
    slow, fast = await race(client, token, [["set", "a", 1]], [["set", "b", 2]])
    assert (slow.status, fast.status) == (200, 200)
    assert (await peek(client, token))["data"] == {"x": 0, "a": 1, "b": 2}


async def test_the_same_key_ends_with_the_value_saved_last(client: Any) -> None:
    token = await start(client, {"k": "old", "x": 0})
    await race(client, token, [["set", "k", "slow"]], [["set", "k", "fast"], ["set", "y", 1]])
    assert (await peek(client, token))["data"] == {"k": "slow", "x": 0, "y": 1}


@pytest.mark.parametrize("deleter", ["slow", "fast"])
async def test_a_key_deleted_by_one_request_and_untouched_by_the_other_stays_deleted(
    client: Any, deleter: str
) -> None:
    token = await start(client, {"gone": 1, "x": 0})
    deletes, sets = [["del", "gone"]], [["set", "other", deleter]]
    slow, fast = (deletes, sets) if deleter == "slow" else (sets, deletes)
    await race(client, token, slow, fast)
    assert (await peek(client, token))["data"] == {"x": 0, "other": deleter}


@pytest.mark.parametrize("later", ["deletes", "changes"])
async def test_a_key_changed_by_one_and_deleted_by_the_other_ends_as_the_later_save_says(
    client: Any, later: str
) -> None:
    token = await start(client, {"k": "old", "x": 0})
    deletes, changes = [["del", "k"]], [["set", "k", "new"]]
    slow, fast = (deletes, changes) if later == "deletes" else (changes, deletes)
    await race(client, token, slow, fast)
    expected = {"x": 0} if later == "deletes" else {"x": 0, "k": "new"}
    assert (await peek(client, token))["data"] == expected


async def test_flashes_added_by_concurrent_requests_are_all_kept_and_shown_once(
    client: Any,
) -> None:
    token = await start(client, {"x": 0}, flashes=("earlier",))
    await race(client, token, [["flash", "from slow"]], [["flash", "from fast"]])
    first = await peek(client, token)
    assert sorted(first["flashes"]) == ["earlier", "from fast", "from slow"]
    assert first["flashes"][0] == "earlier"
    assert (await peek(client, token))["flashes"] == []


@pytest.mark.parametrize("shower", ["slow", "fast"])
async def test_flashes_shown_by_one_request_are_not_brought_back_by_a_concurrent_save(
    client: Any, shower: str
) -> None:
    token = await start(client, {"x": 0}, flashes=("welcome",))
    shows: list[list[Any]] = [["show"]]
    adds: list[list[Any]] = [["flash", "new one"], ["set", "y", 1]]
    slow, fast = (shows, adds) if shower == "slow" else (adds, shows)
    slow_response, fast_response = await race(client, token, slow, fast)
    shown = await (slow_response if shower == "slow" else fast_response).json()
    assert shown == {"shown": ["welcome"]}
    result = await peek(client, token)
    assert result["flashes"] == ["new one"]
    assert result["data"] == {"x": 0, "y": 1}


async def test_a_nested_change_in_place_and_an_equal_value_of_another_type_are_changes(
    client: Any,
) -> None:
    token = await start(client, {"cart": ["book"], "flag": 1})
    await race(
        client,
        token,
        [["append", "cart", "pen"], ["set", "flag", True]],
        [["set", "seen", "item-7"]],
    )
    data = (await peek(client, token))["data"]
    assert data == {"cart": ["book", "pen"], "flag": True, "seen": "item-7"}
    assert data["flag"] is True  # 1 == True in Python: compared serialized, it is a change


async def test_a_max_age_set_by_one_request_survives_a_concurrent_save(client: Any) -> None:
    token = await start(client, {"x": 0})
    await race(client, token, [["set", "a", 1]], [["max_age", 600]])
    result = await peek(client, token)
    assert (result["data"], result["max_age"]) == ({"x": 0, "a": 1}, 600)


@pytest.mark.parametrize("ending", ["logout", "regenerate"])
async def test_a_logout_or_regenerate_wins_over_a_concurrent_write(
    client: Any, ending: str
) -> None:
    old = await start(client, {"user": "alice"})
    slow, fast = await race(client, old, [["set", "late", 1]], [[ending]])
    assert (slow.status, fast.status) == (200, 200)
    # The slower request's save finds the old record gone: it writes nothing and sends no
    # token, neither a new one nor a deletion of the one the faster request handed out.
    assert "Set-Cookie" not in slow.headers
    assert (await peek(client, old))["data"] == {}
    if ending == "regenerate":
        new = COOKIE_WIRE.issued(fast)
        assert new is not None and new != old
        # The session moved on without the slower request's change.
        assert (await peek(client, new))["data"] == {"user": "alice"}


async def test_a_merge_never_revives_deleted_keys_or_old_values(client: Any) -> None:
    """connect-redis #346: its merge-on-save laid a request's whole stale view over the
    record, bringing back keys deleted meanwhile and values overwritten meanwhile."""
    token = await start(client, {"cart": "book", "coupon": "SAVE10", "step": 1})
    await race(
        client,
        token,
        [["set", "seen", "item-7"]],
        [["del", "coupon"], ["set", "step", 2], ["set", "cart", "pen"]],
    )
    assert (await peek(client, token))["data"] == {"cart": "pen", "step": 2, "seen": "item-7"}
    # A request that loaded the merged record and changes nothing leaves it as it is.
    await race(client, token, [["set", "seen", "item-7"]], [["set", "step", 3]])
    assert (await peek(client, token))["data"] == {"cart": "pen", "step": 3, "seen": "item-7"}


async def test_a_request_that_saves_twice_merges_each_change_once(client: Any) -> None:
    token = await start(client, {"x": 0})
    hold = client.app[HOLD]
    hold.loaded.clear()
    hold.release.clear()
    headers = COOKIE_WIRE.present(token)
    pending = asyncio.ensure_future(client.post("/stream", headers=headers))
    await asyncio.wait_for(hold.loaded.wait(), 10)
    fast = await client.post("/op", json=[["set", "b", 2]], headers=headers)
    assert fast.status == 200
    hold.release.set()
    streamed = await asyncio.wait_for(pending, 30)
    assert await streamed.read() == b"streamed"
    result = await peek(client, token)
    assert result["data"] == {"x": 0, "b": 2, "after": "prepare"}
    assert result["flashes"] == ["one"]  # the second save did not add it again


async def test_fifty_concurrent_requests_each_setting_a_key_all_keep_it(client: Any) -> None:
    for _ in range(ROUNDS):
        token = await start(client, {"x": 0})
        headers = COOKIE_WIRE.present(token)
        responses = await asyncio.gather(
            *(client.post("/op", json=[["set", f"k{i}", i]], headers=headers)
              for i in range(CONCURRENT))
        )  # fmt: skip
        assert [r.status for r in responses] == [200] * CONCURRENT
        data = (await peek(client, token))["data"]
        assert data == {"x": 0, **{f"k{i}": i for i in range(CONCURRENT)}}


# -- the rebase itself, case by case (no store) -----------------------------------------------


def _loaded(data: dict[str, Any], flashes: list[Any]) -> Session:
    return Session("id", data=data, new=False, flashes=flashes)


def test_a_flash_shown_and_then_one_added_in_the_same_request_merge_as_both() -> None:
    base = _loaded({"x": 0}, ["welcome"])
    mine = _loaded({"x": 0}, ["welcome"])
    assert mine.pop_flashes() == ["welcome"]
    mine.flash("saved")
    current = _loaded({"x": 0, "y": 1}, ["welcome", "from another request", "welcome"])
    merge_changes(mine, base, current, JSONSerializer())
    # The first "welcome" was shown here; the other request's flashes stay, the new one joins.
    assert current._flashes == ["from another request", "welcome", "saved"]
    assert dict(current) == {"x": 0, "y": 1}


def test_a_base_that_no_longer_opens_counts_every_key_of_the_request_as_its_change() -> None:
    mine = _loaded({"a": 1, "b": 2}, [])
    current = _loaded({"a": 0, "c": 3}, ["kept"])
    current.max_age = 60
    merge_changes(mine, None, current, JSONSerializer())
    assert (dict(current), current._flashes) == ({"a": 1, "b": 2, "c": 3}, ["kept"])
    assert mine.max_age is None and current._max_age is None  # as the request has it


# -- which stores the session layer asks to merge -----------------------------------------------


class _TwinWithoutMerge(MemoryStore):
    """A MemoryStore whose synchronous save was written before merging existed."""

    async def save(
        self,
        token: str | None,
        data: bytes,
        *,
        ttl: int,
        namespace: str,
        established: bool = False,
        merge: Merge | None = None,
    ) -> str | None:
        if token is None:
            return await super().save(
                token, data, ttl=ttl, namespace=namespace, established=established
            )
        return MemoryStore.save_nowait(self, token, data, ttl, namespace, merge)

    @mirrors(save)
    def save_nowait(  # type: ignore[override]  # the old twin: no merge parameter
        self, token: str | None, data: bytes, ttl: int, namespace: str
    ) -> str | None:
        return MemoryStore.save_nowait(self, token, data, ttl, namespace)


def _config(store: AbstractStore) -> SessionConfig:
    app = web.Application()
    setup(app, store)
    return app[_APP_REGISTRY].default


@pytest.mark.parametrize(
    ("build", "merges", "synchronous"),
    [
        (MemoryStore, True, True),
        (MergingDictStore, True, False),
        (DictStore, False, False),  # no replace: last writer wins
        (lambda: CountingStore(MemoryStore()), False, False),  # its save takes no merge
        (lambda: EncryptedCookieStore(generate_key()), False, True),  # client-side
        (_TwinWithoutMerge, True, False),  # the coroutine merges; the twin could not
    ],
    ids=["memory", "replace", "no-replace", "wrapper", "cookie", "old-twin"],
)
def test_merge_is_passed_only_to_a_store_that_can_merge(
    build: Callable[[], AbstractStore], merges: bool, synchronous: bool
) -> None:
    config = _config(build())
    assert config.save_merge is merges
    assert (config.save_nowait is not None) is synchronous


async def test_a_store_whose_old_twin_cannot_merge_still_merges_through_its_coroutine(
    aiohttp_client: Any,
) -> None:
    client = await client_for(aiohttp_client, merge_app(_TwinWithoutMerge()))
    token = await start(client, {"x": 0})
    await race(client, token, [["set", "a", 1]], [["set", "b", 2]])
    assert (await peek(client, token))["data"] == {"x": 0, "a": 1, "b": 2}


# -- giving up --------------------------------------------------------------------------------


def _losing(store: ServerStore) -> ServerStore:
    """``store``, changed so that every compare-and-swap loses: right before it, another
    save lands (a real write, through the driver's own ``update``) adding one to
    ``interloper``. So each attempt sees a record newer than the one it compared with."""
    driver = type(store)
    serializer = JSONSerializer()

    async def replace(self: ServerStore, key: str, expected: bytes, data: bytes, ttl: int) -> bool:
        current = await self.get(key)
        if current is not None:
            other = decode_payload(
                current, serializer, identity=None, idle_timeout=3600, absolute_timeout=86400
            )
            assert other is not None
            other["interloper"] = other.get("interloper", 0) + 1
            assert await self.update(key, encode_payload(other, serializer, now()), ttl)
        return await driver.replace(self, key, expected, data, ttl)

    store.__class__ = type(f"Losing{driver.__name__}", (driver,), {"replace": replace})
    return store


async def test_a_merge_that_keeps_losing_answers_503_and_writes_nothing(
    aiohttp_client: Any, contended_store_factory: StoreFactory
) -> None:
    store = contended_store_factory()
    assert isinstance(store, ServerStore)
    client = await client_for(aiohttp_client, merge_app(store))
    token = await start(client, {"x": 0})
    _losing(store)
    response = await client.post(
        "/op", json=[["set", "mine", 1]], headers=COOKIE_WIRE.present(token)
    )
    assert response.status == 503
    assert response.headers["Retry-After"].isdigit()
    assert "Set-Cookie" not in response.headers
    store.__class__ = type(store).__mro__[1]  # the driver as it is again
    # Each of the merge_attempts writes lost to another save; none of them landed.
    assert (await peek(client, token))["data"] == {"x": 0, "interloper": store.merge_attempts}


@pytest.mark.parametrize("contended_store_factory", ["redis", "motor", "sql-sqlite"], indirect=True)
async def test_a_save_that_lost_a_race_is_not_overtaken_by_a_later_one(
    contended_store_factory: StoreFactory,
) -> None:
    """The merging saves of one record in a process are served first come, first served:
    a save that lost its first race and is writing again is never beaten by a save that
    arrived after it (which used to starve it into a 503 under load)."""
    store = contended_store_factory()
    assert isinstance(store, ServerStore)
    driver = type(store)
    token = await store.save(None, b"0", ttl=60, namespace="s")
    assert token is not None

    def appending(base: bytes, mark: bytes) -> Merge:
        return Merge(base, lambda current: current + mark)

    async def save(data: bytes, merge: Merge) -> str | None:
        return await store.save(token, data, ttl=60, namespace="s", merge=merge)

    assert await save(b"0B", appending(b"0", b"B")) == token  # B saves after A loaded
    later: list[asyncio.Task[str | None]] = []
    a_writes: list[bytes] = []

    async def replace(self: ServerStore, key: str, expected: bytes, data: bytes, ttl: int) -> bool:
        if data.endswith(b"A"):
            a_writes.append(data)
            if len(a_writes) == 2:
                # A lost to B and is about to write again: C, loaded after B, saves now.
                later.append(asyncio.create_task(save(b"0BC", appending(b"0B", b"C"))))
                await asyncio.wait(later, timeout=0.5)  # C must not get through meanwhile
        return await driver.replace(self, key, expected, data, ttl)

    store.__class__ = type(f"Watched{driver.__name__}", (driver,), {"replace": replace})
    try:
        assert await save(b"0A", appending(b"0", b"A")) == token
        assert not later[0].done()  # C waited for A, in line
        assert await later[0] == token
    finally:
        store.__class__ = driver
    assert a_writes == [b"0A", b"0BA"]  # one lost race, then written: never overtaken
    assert await store.load(token, namespace="s") == b"0BAC"


@pytest.mark.parametrize(
    "merging_store_factory", ["redis", "redis-cluster", "redis-sentinel"], indirect=True
)
async def test_redis_replace_works_again_after_the_server_forgot_its_script(
    merging_store_factory: StoreFactory,
) -> None:
    """A restarted or failed-over Redis has no scripts: EVALSHA answers NOSCRIPT, having
    run nothing, and the store loads the script and runs it again."""
    from aiohttp_sessionkit.ids import record_key
    from aiohttp_sessionkit.stores.redis import RedisStore

    store = merging_store_factory()
    assert isinstance(store, RedisStore)
    token = await store.save(None, b"one", ttl=60, namespace="s")
    assert token is not None
    key = record_key("s", token)
    assert await store.replace(key, b"one", b"two", 60)
    for _ in range(2):  # forgotten twice: the store does not cache "loaded"
        await store.client.script_flush()
        assert not await store.replace(key, b"one", b"lost", 60)  # compares with b"two"
        assert await store.get(key) == b"two"
    await store.client.script_flush()
    assert await store.replace(key, b"two", b"three", 60)
    assert await store.get(key) == b"three"


# -- a store restart in the middle of saves ---------------------------------------------------


class DurableRedis(_KillableRedis):
    """A redis-server that writes every command to its append-only file before answering."""

    name = "redis-durable"
    options = ("--appendonly", "yes", "--appendfsync", "always")


@pytest.fixture
def durable_redis() -> Iterator[DurableRedis]:
    with DurableRedis() as server:
        server.start()
        yield server


@pytest.mark.servers
async def test_a_redis_killed_mid_save_leaves_the_last_complete_saves(
    aiohttp_client: Any, durable_redis: DurableRedis
) -> None:
    from aiohttp_sessionkit.stores.redis import RedisStore

    store = RedisStore(durable_redis.url, key_prefix="durable:")
    try:
        client = await client_for(aiohttp_client, merge_app(store))
        token = await start(client, {"x": 0})
        headers = COOKIE_WIRE.present(token)

        async def mark(i: int) -> int:
            response = await client.post("/op", json=[["set", f"k{i}", i]], headers=headers)
            return int(response.status)

        jobs = [asyncio.ensure_future(mark(i)) for i in range(CONCURRENT)]
        await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.to_thread(durable_redis.kill)  # SIGKILL while saves are in flight
        statuses = await asyncio.gather(*jobs)
        await asyncio.to_thread(durable_redis.start)
        # Some saves had landed, the others were in flight: their requests got a 503.
        assert set(statuses) == {200, 503}
        data = (await peek(client, token))["data"]  # the record opens: it is whole
        saved = {f"k{i}" for i, status in enumerate(statuses) if status == 200}
        # Every save that answered 200 is in it; a 503's may be too (the kill came after
        # its write and before its answer), and nothing else is.
        assert saved <= set(data) - {"x"} <= {f"k{i}" for i in range(CONCURRENT)}
        assert all(data[key] == int(key[1:]) for key in data if key != "x")
        assert data["x"] == 0
    finally:
        await store.close()
