"""The store contract as a pytest test class: prove that your own store behaves.

A store that keeps sessions on a server subclasses :class:`~aiohttp_sessionkit.ServerStore`
and implements four record operations. This module checks them the way the session layer
relies on them, against the real backend your tests provide::

    import pytest
    from aiohttp_sessionkit.testing import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        async def store(self):
            store = MyStore("myserver://localhost/test", prefix=unique_prefix())
            yield store
            await store.close()

pytest then collects every ``test_*`` method of :class:`StoreContract` for ``TestMyStore``.
The tests are coroutines: they need pytest-asyncio, which ``pip install
"aiohttp-sessionkit[testing]"`` installs with pytest. They carry its ``asyncio`` mark, so
both its strict and auto modes run them. The ``store`` fixture must give a fresh store
with no records, on a backend of its own (a fresh table, key prefix or database).

It also helps the tests of an application that uses sessions: :func:`seed_session` gives a
test client a session holding the data a test needs (a signed-in user, say), and
:func:`read_session` returns what the application's handlers stored in it, both through the
store the application was set up with, without building cookies by hand.

This module imports pytest; ``import aiohttp_sessionkit`` never imports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.test_utils import TestClient

try:
    import pytest
except ImportError as exc:  # a store author's test dependencies, not the library's
    raise ImportError(
        "aiohttp_sessionkit.testing runs under pytest with pytest-asyncio: pip install "
        f'"aiohttp-sessionkit[testing]" ({exc})'
    ) from exc

from .abc import Merge, ServerStore
from .api import _APP_REGISTRY
from .ids import is_valid_session_id, new_session_id, record_key
from .middleware import SessionConfig
from .session import now
from .transports import CookieTransport

__all__ = ["MALFORMED_TOKENS", "StoreContract", "read_session", "seed_session"]


def _cookie_config(client: TestClient[Any, Any], name: str | None) -> SessionConfig:
    app: web.Application | None = client.app
    registry = None if app is None else app.get(_APP_REGISTRY)
    if registry is None:
        raise RuntimeError(
            "the test client's application has no sessions: call aiohttp_sessionkit.setup(app, "
            "store) in the application factory the test uses"
        )
    config = registry.get(name)
    if not isinstance(config.transports[0], CookieTransport):
        raise RuntimeError(
            f"the session {config.namespace!r} does not travel in a cookie: save a session "
            "through the application (a login route) and send its token yourself"
        )
    return config


async def seed_session(
    client: TestClient[web.Request, web.Application],
    data: Mapping[str, Any],
    *,
    name: str | None = None,
) -> str:
    """Give ``client`` a session holding ``data``, as if a handler had stored it.

    The session is written to the store the application was set up with (its first session,
    or the one with cookie name ``name``), and its cookie goes into the client's cookie jar:
    the next requests present it. Returns the token. Start the client first (pytest-aiohttp's
    ``aiohttp_client`` fixture does), so that the store is open.
    """
    config = _cookie_config(client, name)
    session = config.store.session_class()
    session.update(data)
    t = now()
    payload = config.dump(session, config.serializer, t)
    token = await config.store.save(
        None,
        payload,
        ttl=min(config.idle_timeout, config.absolute_timeout),
        namespace=config.namespace,
    )
    if token is None:  # only an update can find its record gone
        raise RuntimeError(f"{config.store!r} did not save a new session")
    client.session.cookie_jar.update_cookies(
        {config.namespace: token}, response_url=client.make_url("/")
    )
    return token


async def read_session(
    client: TestClient[web.Request, web.Application], *, name: str | None = None
) -> dict[str, Any] | None:
    """The data of the session ``client`` holds now (what the handlers stored), or None
    when the client holds no session cookie or its session is gone (signed out, expired)."""
    config = _cookie_config(client, name)
    tokens = [m.value for m in client.session.cookie_jar if m.key == config.namespace]
    if not tokens or not tokens[-1]:
        return None
    token = tokens[-1]
    payload = await config.store.load(token, namespace=config.namespace)
    if payload is None:
        return None
    session = config.opened(payload, None if config.store.client_side else token)
    return None if session is None else dict(session)


#: Tokens a client may send that are not ids we issue; none may reach the backend.
MALFORMED_TOKENS: tuple[str, ...] = (
    "",
    "*",
    "../../etc/passwd",
    "' OR '1'='1",
    "x" * 1000,
    "\x00" * 43,
    "é" * 43,
    new_session_id()[:-1],
    new_session_id() + "A",
)
# Stable test ids: two of the tokens are random, and pytest-xdist requires every worker to
# collect the same names.
_MALFORMED_IDS = (
    "empty", "star", "path", "sql", "long", "nul", "non-ascii", "id-minus-one", "id-plus-one"
)  # fmt: skip

_NS = "AIOHTTP_SESSION"


class StoreContract:
    """The behaviours every server-side store owes the session layer, as pytest tests.

    Subclass it in a class whose name starts with ``Test`` and override the ``store``
    fixture. Class attributes tune it to your backend:
    """

    #: The TTL (seconds) of the records the expiry test waits out. Long enough for a save
    #: and a load to happen before it runs out, on a loaded test machine.
    short_ttl: ClassVar[int] = 2
    #: Seconds to wait past ``short_ttl`` before the records must be gone. Raise it for a
    #: store whose queries do not filter on expiry and whose native expiry lags.
    expiry_lag: ClassVar[float] = 0.5
    #: Bytes in the large payload that must round-trip unchanged.
    large_payload: ClassVar[int] = 256 * 1024
    #: Concurrent operations in the concurrency tests.
    concurrency: ClassVar[int] = 50

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    @pytest.fixture
    def store(self) -> ServerStore:
        """Override: a fresh, empty store on a real backend (yield it, close it after)."""
        raise NotImplementedError(
            "StoreContract needs a `store` fixture: override it in your test class to yield "
            "a fresh ServerStore on its own table, prefix or database"
        )

    @staticmethod
    def _server(store: Any) -> ServerStore:
        assert isinstance(store, ServerStore), (
            f"StoreContract checks ServerStore subclasses; the store fixture gave "
            f"{type(store).__name__}"
        )
        return store

    # -- round trips

    async def test_save_load_update_delete_round_trip(self, store: Any) -> None:
        store = self._server(store)
        token = await store.save(None, b"first", ttl=60, namespace=_NS)
        assert token is not None and is_valid_session_id(token)
        assert await store.load(token, namespace=_NS) == b"first"
        assert await store.save(token, b"second", ttl=60, namespace=_NS) == token
        assert await store.load(token, namespace=_NS) == b"second"
        await store.delete(token, namespace=_NS)
        assert await store.load(token, namespace=_NS) is None

    async def test_delete_is_idempotent(self, store: Any) -> None:
        store = self._server(store)
        token = await store.save(None, b"x", ttl=60, namespace=_NS)
        assert token is not None
        await store.delete(token, namespace=_NS)
        await store.delete(token, namespace=_NS)
        await store.remove(record_key(_NS, new_session_id()))  # never existed
        assert await store.load(token, namespace=_NS) is None

    async def test_new_saves_get_distinct_tokens(self, store: Any) -> None:
        store = self._server(store)
        first = await store.save(None, b"a", ttl=60, namespace=_NS)
        second = await store.save(None, b"b", ttl=60, namespace=_NS)
        assert first is not None and second is not None and first != second
        assert await store.load(first, namespace=_NS) == b"a"
        assert await store.load(second, namespace=_NS) == b"b"

    async def test_binary_and_large_payloads_survive_unchanged(self, store: Any) -> None:
        store = self._server(store)
        for payload in (bytes(range(256)) * 16, b"\x00", bytes(self.large_payload)):
            token = await store.save(None, payload, ttl=60, namespace=_NS)
            assert token is not None
            assert await store.load(token, namespace=_NS) == payload

    async def test_the_record_key_is_a_hash_never_the_session_id(self, store: Any) -> None:
        store = self._server(store)
        token = await store.save(None, b"x", ttl=60, namespace=_NS)
        assert token is not None
        assert await store.get(record_key(_NS, token)) == b"x"
        assert await store.get(token) is None

    # -- namespaces and bad tokens

    async def test_a_token_opens_nothing_under_another_namespace(self, store: Any) -> None:
        store = self._server(store)
        token = await store.save(None, b"x", ttl=60, namespace="cookie_a")
        assert token is not None
        assert await store.load(token, namespace="cookie_b") is None
        assert await store.save(token, b"y", ttl=60, namespace="cookie_b") is None
        await store.delete(token, namespace="cookie_b")
        assert await store.load(token, namespace="cookie_a") == b"x"

    async def test_unknown_tokens_load_nothing_and_an_update_never_creates(
        self, store: Any
    ) -> None:
        store = self._server(store)
        unknown = new_session_id()
        assert await store.load(unknown, namespace=_NS) is None
        assert await store.save(unknown, b"planted", ttl=60, namespace=_NS) is None
        assert await store.load(unknown, namespace=_NS) is None

    @pytest.mark.parametrize("token", MALFORMED_TOKENS, ids=_MALFORMED_IDS)
    async def test_malformed_tokens_load_nothing_write_nothing_and_delete_nothing(
        self, store: Any, token: str
    ) -> None:
        store = self._server(store)
        live = await store.save(None, b"live", ttl=60, namespace=_NS)
        assert live is not None
        assert await store.load(token, namespace=_NS) is None
        assert await store.save(token, b"planted", ttl=60, namespace=_NS) is None
        await store.delete(token, namespace=_NS)
        assert await store.load(live, namespace=_NS) == b"live"

    # -- create-only and update-only

    async def test_create_refuses_a_live_key_and_update_refuses_a_missing_one(
        self, store: Any
    ) -> None:
        store = self._server(store)
        token = await store.save(None, b"original", ttl=60, namespace=_NS)
        assert token is not None
        key = record_key(_NS, token)
        assert await store.create(key, b"overwrite", 60) is False
        assert await store.load(token, namespace=_NS) == b"original"
        await store.delete(token, namespace=_NS)
        assert await store.update(key, b"resurrected", 60) is False
        assert await store.get(key) is None

    async def test_a_logout_is_never_undone_by_a_late_save(self, store: Any) -> None:
        store = self._server(store)
        token = await store.save(None, b"logged in", ttl=60, namespace=_NS)
        assert token is not None
        await store.delete(token, namespace=_NS)
        assert await store.save(token, b"late write", ttl=60, namespace=_NS) is None
        assert await store.load(token, namespace=_NS) is None

    # -- expiry

    async def test_a_lifetime_of_months_keeps_the_record(self, store: Any) -> None:
        # "Remember me" sessions live for months. memcached, for one, reads an expiry over
        # 30 days as a Unix time: sent as a number of seconds it is a date in 1970, and the
        # record is gone at once unless the driver converts it.
        store = self._server(store)
        ttl = 90 * 24 * 3600
        token = await store.save(None, b"remembered", ttl=ttl, namespace=_NS)
        assert token is not None
        assert await store.load(token, namespace=_NS) == b"remembered"
        assert await store.save(token, b"still", ttl=ttl, namespace=_NS) == token
        assert await store.load(token, namespace=_NS) == b"still"

    async def test_expiry_hides_records_refuses_updates_and_frees_keys_for_the_purge(
        self, store: Any
    ) -> None:
        store = self._server(store)
        ttl = self.short_ttl
        short = [await store.save(None, b"short", ttl=ttl, namespace=_NS) for _ in range(3)]
        refreshed = await store.save(None, b"a", ttl=ttl, namespace=_NS)
        live = await store.save(None, b"live", ttl=60, namespace=_NS)
        assert refreshed is not None and live is not None and None not in short
        assert await store.save(refreshed, b"b", ttl=60, namespace=_NS) == refreshed
        assert await store.load(short[0] or "", namespace=_NS) == b"short"
        # Waiting is the behaviour under test here: the TTL has to run out for real.
        await asyncio.sleep(ttl + self.expiry_lag)
        for token in short:
            assert token is not None
            assert await store.load(token, namespace=_NS) is None
        # An update never revives an expired record...
        first = short[0] or ""
        assert await store.save(first, b"revived", ttl=60, namespace=_NS) is None
        assert await store.load(first, namespace=_NS) is None
        # ...the TTL was reset by the update...
        assert await store.load(refreshed, namespace=_NS) == b"b"
        # ...the purge leaves live records alone...
        purged = await store.purge_expired()
        assert isinstance(purged, int) and 0 <= purged <= len(short)
        assert await store.load(live, namespace=_NS) == b"live"
        # ...and a create may take an expired record's key.
        key = record_key(_NS, short[1] or "")
        assert await store.create(key, b"fresh", 60) is True
        assert await store.get(key) == b"fresh"

    # -- concurrency

    async def test_concurrent_creates_all_land_with_distinct_tokens(self, store: Any) -> None:
        store = self._server(store)
        payloads = [b"s%d" % i for i in range(self.concurrency)]
        tokens = await asyncio.gather(
            *(store.save(None, payload, ttl=60, namespace=_NS) for payload in payloads)
        )
        assert None not in tokens and len(set(tokens)) == len(tokens)
        loaded = await asyncio.gather(
            *(store.load(token, namespace=_NS) for token in tokens if token is not None)
        )
        assert loaded == payloads

    async def test_concurrent_creates_of_one_key_let_exactly_one_win(self, store: Any) -> None:
        store = self._server(store)
        key = record_key(_NS, new_session_id())
        payloads = [b"c%d" % i for i in range(self.concurrency)]
        results = await asyncio.gather(*(store.create(key, p, 60) for p in payloads))
        assert results.count(True) == 1
        assert await store.get(key) == payloads[results.index(True)]

    async def test_concurrent_loads_each_get_their_own_record(self, store: Any) -> None:
        store = self._server(store)
        tokens = [await store.save(None, b"r%d" % i, ttl=60, namespace=_NS) for i in range(10)]
        asked = [t for t in tokens if t is not None] * 3 + [new_session_id() for _ in range(10)]
        loaded = await asyncio.gather(*(store.load(t, namespace=_NS) for t in asked))
        expected = [b"r%d" % (i % 10) for i in range(30)] + [None] * 10
        assert loaded == expected

    async def test_concurrent_updates_of_one_record_leave_one_whole_write(self, store: Any) -> None:
        store = self._server(store)
        token = await store.save(None, b"start", ttl=60, namespace=_NS)
        assert token is not None
        payloads = [b"u%d" % i * 100 for i in range(self.concurrency)]
        results = await asyncio.gather(
            *(store.save(token, p, ttl=60, namespace=_NS) for p in payloads)
        )
        assert results == [token] * len(payloads)
        assert await store.load(token, namespace=_NS) in payloads

    async def test_concurrent_updates_of_many_records_each_land(self, store: Any) -> None:
        store = self._server(store)
        tokens = [await store.save(None, b"0", ttl=60, namespace=_NS) for _ in range(20)]
        assert None not in tokens
        writes = [(t, b"new %d" % i) for i, t in enumerate(tokens) if t is not None]
        results = await asyncio.gather(
            *(store.save(t, data, ttl=60, namespace=_NS) for t, data in writes)
        )
        assert results == [t for t, _ in writes]
        for token, data in writes:
            assert await store.load(token, namespace=_NS) == data

    async def test_updates_racing_a_delete_never_bring_the_record_back(self, store: Any) -> None:
        store = self._server(store)
        token = await store.save(None, b"alive", ttl=60, namespace=_NS)
        assert token is not None
        half = self.concurrency // 2
        jobs = [store.save(token, b"w%d" % i, ttl=60, namespace=_NS) for i in range(half)]
        jobs.append(store.delete(token, namespace=_NS))
        jobs += [store.save(token, b"w%d" % i, ttl=60, namespace=_NS) for i in range(half)]
        results = await asyncio.gather(*jobs)
        assert all(result in (token, None) for result in results)
        assert await store.load(token, namespace=_NS) is None

    # -- merging updates (ServerStore.replace)
    #
    # A store that implements ``replace`` never loses a concurrent request's change; one
    # that does not keeps the whole-record ``update``, where the last writer wins. That is
    # allowed (and documented): the kit then says so, as a skip with its reason, and checks
    # that a save asked to merge still writes its payload.

    @staticmethod
    def _merging(store: Any) -> ServerStore:
        server = StoreContract._server(store)
        if not server.merges:
            pytest.skip(
                f"{type(server).__name__} does not implement ServerStore.replace: its updates "
                "are last-writer-wins (a concurrent request's change can be lost); implement "
                "replace, an atomic compare-and-swap, for merging updates"
            )
        return server

    async def test_replace_writes_only_over_the_expected_payload(self, store: Any) -> None:
        store = self._merging(store)
        token = await store.save(None, b"v1", ttl=60, namespace=_NS)
        assert token is not None
        key = record_key(_NS, token)
        assert await store.replace(key, b"v0", b"stale", 60) is False
        assert await store.get(key) == b"v1"
        assert await store.replace(key, b"v1", b"v2", 60) is True
        assert await store.get(key) == b"v2"
        assert await store.replace(key, b"v1", b"again", 60) is False  # compares with v2
        assert await store.get(key) == b"v2"
        await store.delete(token, namespace=_NS)
        assert await store.replace(key, b"v2", b"revived", 60) is False
        assert await store.get(key) is None
        unknown = record_key(_NS, new_session_id())
        assert await store.replace(unknown, b"", b"created", 60) is False
        assert await store.get(unknown) is None

    async def test_replace_compares_whole_binary_payloads(self, store: Any) -> None:
        store = self._merging(store)
        payload = bytes(range(256)) * 64
        token = await store.save(None, payload, ttl=60, namespace=_NS)
        assert token is not None
        key = record_key(_NS, token)
        # One byte off, at the end or in the middle (a NUL), or a prefix: not the payload.
        for near in (payload[:-1] + b"\xfe", payload[:100] + b"\x01" + payload[101:], payload[:-1]):
            assert await store.replace(key, near, b"wrong", 60) is False
        assert await store.replace(key, payload, payload + b"\x00", 60) is True
        assert await store.get(key) == payload + b"\x00"

    async def test_concurrent_replaces_from_one_payload_let_exactly_one_win(
        self, store: Any
    ) -> None:
        store = self._merging(store)
        token = await store.save(None, b"base", ttl=60, namespace=_NS)
        assert token is not None
        key = record_key(_NS, token)
        payloads = [b"w%d" % i for i in range(self.concurrency)]
        won = await asyncio.gather(*(store.replace(key, b"base", p, 60) for p in payloads))
        assert won.count(True) == 1
        assert await store.get(key) == payloads[won.index(True)]

    async def test_concurrent_merging_saves_each_keep_their_change(self, store: Any) -> None:
        # The payload here is a list of items; each save adds its own, on top of whatever
        # another save left (what the session layer does with a session's keys).
        store = self._merging(store)
        token = await store.save(None, b"start", ttl=60, namespace=_NS)
        assert token is not None

        def merge(item: bytes) -> Merge:
            return Merge(base=b"start", rebase=lambda current: current + b"|" + item)

        items = [b"i%d" % i for i in range(self.concurrency)]
        saved = await asyncio.gather(
            *(
                store.save(token, b"start|" + item, ttl=60, namespace=_NS, merge=merge(item))
                for item in items
            )
        )
        assert saved == [token] * len(items)
        stored = await store.load(token, namespace=_NS)
        assert stored is not None
        first, *added = stored.split(b"|")
        assert first == b"start" and sorted(added) == sorted(items)

    async def test_a_merging_save_after_a_logout_writes_nothing(self, store: Any) -> None:
        store = self._merging(store)
        token = await store.save(None, b"base", ttl=60, namespace=_NS)
        assert token is not None
        await store.delete(token, namespace=_NS)
        merge = Merge(base=b"base", rebase=lambda current: current + b"|late")
        assert await store.save(token, b"late", ttl=60, namespace=_NS, merge=merge) is None
        assert await store.load(token, namespace=_NS) is None

    async def test_a_store_without_replace_still_saves_a_merging_update_whole(
        self, store: Any
    ) -> None:
        store = self._server(store)
        if store.merges:
            pytest.skip(f"{type(store).__name__} implements replace: its updates merge")
        token = await store.save(None, b"base", ttl=60, namespace=_NS)
        assert token is not None
        await store.save(token, b"other", ttl=60, namespace=_NS)  # another request's save
        merge = Merge(base=b"base", rebase=lambda current: current + b"|mine")
        assert await store.save(token, b"mine", ttl=60, namespace=_NS, merge=merge) == token
        assert await store.load(token, namespace=_NS) == b"mine"  # the last writer wins

    # -- lifecycle

    async def test_open_and_close_are_idempotent_and_the_store_works_after_reopening(
        self, store: Any
    ) -> None:
        store = self._server(store)
        await store.open()
        await store.open()
        token = await store.save(None, b"kept", ttl=60, namespace=_NS)
        assert token is not None
        await store.close()
        await store.close()
        await store.open()
        assert await store.load(token, namespace=_NS) == b"kept"

    # -- the user index (setup(..., user_key=...)): skipped for a store without replace()

    async def _indexed(self, store: Any) -> ServerStore:
        server = self._server(store)
        await server.open()  # a store may learn what its server can do only when connected
        if not server.user_index:
            pytest.skip(
                f"{type(server).__name__} has no user index (it needs replace(), "
                "compare-and-swap): setup(..., user_key=...) refuses it"
            )
        return server

    @staticmethod
    def _owned_by(user: bytes) -> Callable[[Any], int | None]:
        # The session layer's judge, for opaque test payloads "<user>:<last seen>".
        def last_seen(payload: Any) -> int | None:
            owner, _, seen = bytes(payload).partition(b":")
            return int(seen) if owner == user and seen.isdigit() else None

        return last_seen

    async def _bound(self, store: ServerStore, user: str, seen: int = 1) -> str:
        token = await store.save(None, b"%s:%d" % (user.encode(), seen), ttl=60, namespace=_NS)
        assert token is not None
        t = now()
        await store.bind_user(
            token,
            user,
            namespace=_NS,
            created=t,
            until=t + 60,
            last_seen=self._owned_by(user.encode()),
            user_agent="kit",
            remote="127.0.0.1",
        )
        return token

    async def test_user_index_lists_a_users_bound_records_only(self, store: Any) -> None:
        store = await self._indexed(store)
        alice = [await self._bound(store, "alice") for _ in range(3)]
        await self._bound(store, "bob")
        records = await store.user_records(
            "alice", namespace=_NS, last_seen=self._owned_by(b"alice")
        )
        handles = {store.handle(t, namespace=_NS) for t in alice}
        assert {r.handle for r in records} == handles
        assert all(r.payload == b"alice:1" and r.user_agent == "kit" for r in records)
        assert all(t not in h for t in alice for h in handles if h)  # a handle is no token

    async def test_user_index_drops_records_gone_or_rebound_when_listed(self, store: Any) -> None:
        store = await self._indexed(store)
        kept, gone, moved = [await self._bound(store, "alice") for _ in range(3)]
        await store.delete(gone, namespace=_NS)
        assert await store.save(moved, b"bob:1", ttl=60, namespace=_NS) == moved
        judge = self._owned_by(b"alice")
        records = await store.user_records("alice", namespace=_NS, last_seen=judge)
        assert [r.handle for r in records] == [store.handle(kept, namespace=_NS)]
        handle = store.handle(kept, namespace=_NS)
        assert handle is not None
        await store.unbind_user(handle, "alice", namespace=_NS)
        assert await store.user_records("alice", namespace=_NS, last_seen=judge) == []
        assert await store.load(kept, namespace=_NS) == b"alice:1"  # unbinding ends nothing

    async def test_user_index_ends_a_user_sparing_one_and_never_another_users_record(
        self, store: Any
    ) -> None:
        store = await self._indexed(store)
        alice = [await self._bound(store, "alice") for _ in range(4)]
        bob = await self._bound(store, "bob")
        # A stale entry: alice's record now belongs to bob; ending alice must spare it.
        assert await store.save(alice[3], b"bob:1", ttl=60, namespace=_NS) == alice[3]
        keep = store.handle(alice[0], namespace=_NS)
        ended = await store.end_user(
            "alice", namespace=_NS, last_seen=self._owned_by(b"alice"), keep=keep
        )
        assert ended == 2
        assert await store.load(alice[0], namespace=_NS) == b"alice:1"
        assert [await store.load(t, namespace=_NS) for t in alice[1:3]] == [None, None]
        assert await store.load(alice[3], namespace=_NS) == b"bob:1"
        assert await store.load(bob, namespace=_NS) == b"bob:1"

    async def test_user_index_limit_ends_the_least_recently_active(self, store: Any) -> None:
        store = await self._indexed(store)
        old = await self._bound(store, "alice", seen=10)
        recent = await self._bound(store, "alice", seen=30)
        token = await store.save(None, b"alice:40", ttl=60, namespace=_NS)
        assert token is not None
        t = now()
        ended = await store.bind_user(
            token, "alice", namespace=_NS, created=t, until=t + 60,
            last_seen=self._owned_by(b"alice"), limit=2,
        )  # fmt: skip
        assert ended == 1
        assert await store.load(old, namespace=_NS) is None
        assert await store.load(recent, namespace=_NS) == b"alice:30"

    async def test_user_index_concurrent_binds_of_one_user_all_land(self, store: Any) -> None:
        store = await self._indexed(store)
        tokens = await asyncio.gather(*(self._bound(store, "alice") for _ in range(20)))
        records = await store.user_records(
            "alice", namespace=_NS, last_seen=self._owned_by(b"alice")
        )
        assert len(records) == len(set(tokens)) == 20

    @pytest.mark.parametrize(
        "handle", ["", "0" * 64, "A" * 64, "g" * 64, "0" * 63, "../" * 22, "\x00" * 64]
    )
    async def test_user_index_bad_handles_load_nothing_and_end_nothing(
        self, store: Any, handle: str
    ) -> None:
        store = await self._indexed(store)
        token = await self._bound(store, "alice")
        assert await store.load_handle(handle, namespace=_NS) is None
        await store.end_handle(handle, namespace=_NS)
        assert await store.load(token, namespace=_NS) == b"alice:1"
