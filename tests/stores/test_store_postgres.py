"""PostgresStore against a real, throwaway PostgreSQL server (see tests/harness/servers.py)."""

from __future__ import annotations

import asyncio
import inspect
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]
import pytest

from aiohttp_sessionkit.exceptions import (
    ConfigurationError,
    StoreError,
    StoreUnavailable,
)
from aiohttp_sessionkit.ids import new_session_id, record_key
from aiohttp_sessionkit.stores.postgres import PostgresStore

# ``postgres_server`` is the session-scoped fixture from tests/harness/servers.py, registered
# by conftest.
# Raw SQL below interpolates only table names the tests generate, hence the S608 noqas.

NS = "session"


class _Server(Protocol):
    @property
    def url(self) -> str: ...

    def stop(self) -> object: ...

    def start(self) -> object: ...


async def _call(action: Callable[[], object]) -> None:
    """Run a server control method whether the fixture made it sync or async."""
    result = action()
    if inspect.isawaitable(result):
        await result


def _with_param(url: str, name: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


@pytest.fixture
def table() -> str:
    return f"sessions_{secrets.token_hex(6)}"


@pytest.fixture
async def pool(postgres_server: _Server) -> AsyncIterator[Any]:
    pool = await asyncpg.create_pool(postgres_server.url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def store(pool: Any, table: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pool, table=table)
    await store.open()
    yield store
    await store.close()


async def _count(pool: Any, relation: str, where: str = "true", *args: object) -> int:
    count: int = await pool.fetchval(f"SELECT count(*) FROM {relation} WHERE {where}", *args)  # noqa: S608
    return count


async def _exists(pool: Any, relation: str) -> bool:
    found: bool = await pool.fetchval("SELECT to_regclass($1) IS NOT NULL", relation)
    return found


async def _expire(pool: Any, table: str, key: str | None = None) -> None:
    """Move rows into the past with raw SQL instead of sleeping through a ttl."""
    if key is None:
        await pool.execute(f"UPDATE {table} SET expires_at = now() - interval '1 second'")  # noqa: S608
    else:
        await pool.execute(
            f"UPDATE {table} SET expires_at = now() - interval '1 second' WHERE key = $1",  # noqa: S608
            key,
        )


async def _connections(pool: Any, application_name: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application_name
    )
    return count


async def _wait_for_connections(pool: Any, application_name: str, expected: int) -> int:
    # Backends leave pg_stat_activity a moment after their client disconnects.
    for _ in range(100):
        count = await _connections(pool, application_name)
        if count == expected:
            return count
        await asyncio.sleep(0.05)
    return count


# --- the public ServerStore API --------------------------------------------------------------


async def test_rows_are_keyed_by_hash_not_by_session_id(
    store: PostgresStore, pool: Any, table: str
) -> None:
    token = await store.save(None, b"data", ttl=60, namespace=NS)
    assert token is not None
    keys = [row["key"] for row in await pool.fetch(f"SELECT key FROM {table}")]  # noqa: S608
    assert keys == [record_key(NS, token)]


async def test_expiry_uses_the_ttl_in_server_time(
    store: PostgresStore, pool: Any, table: str
) -> None:
    token = await store.save(None, b"data", ttl=3600, namespace=NS)
    assert token is not None
    seconds: float = await pool.fetchval(
        f"SELECT extract(epoch FROM expires_at - now()) FROM {table} WHERE key = $1",  # noqa: S608
        record_key(NS, token),
    )
    assert 3590 < seconds <= 3600


# --- create-only and update-only -------------------------------------------------------------


async def test_update_of_an_unknown_token_writes_nothing(
    store: PostgresStore, pool: Any, table: str
) -> None:
    token = new_session_id()
    assert await store.save(token, b"data", ttl=60, namespace=NS) is None
    assert await _count(pool, table) == 0


async def test_logout_is_not_undone_by_a_late_save(
    store: PostgresStore, pool: Any, table: str
) -> None:
    token = await store.save(None, b"logged in", ttl=60, namespace=NS)
    assert token is not None
    await store.delete(token, namespace=NS)

    assert await store.save(token, b"late write", ttl=60, namespace=NS) is None
    assert await store.load(token, namespace=NS) is None
    assert await _count(pool, table) == 0


async def test_create_never_overwrites_a_live_row(store: PostgresStore) -> None:
    key = record_key(NS, new_session_id())
    assert await store.create(key, b"original", 60) is True
    assert await store.create(key, b"intruder", 60) is False
    assert await store.get(key) == b"original"


async def test_an_expired_row_is_not_loaded_nor_updated_but_can_be_replaced(
    store: PostgresStore, pool: Any, table: str
) -> None:
    token = await store.save(None, b"old", ttl=60, namespace=NS)
    assert token is not None
    key = record_key(NS, token)
    await _expire(pool, table, key)

    assert await store.load(token, namespace=NS) is None
    assert await store.save(token, b"revived?", ttl=60, namespace=NS) is None
    assert await pool.fetchval(f"SELECT data FROM {table} WHERE key = $1", key) == b"old"  # noqa: S608

    assert await store.create(key, b"new", 60) is True
    assert await store.get(key) == b"new"


# --- concurrent requests share round trips -----------------------------------------------------


class _Statements:
    """Every statement a pool's connections send, from asyncpg's own query logger."""

    def __init__(self, table: str) -> None:
        self._table = table
        self._sent: list[str] = []

    def __call__(self, record: Any) -> None:
        self._sent.append(record.query)

    def clear(self) -> None:
        self._sent.clear()

    async def on_table(self) -> list[str]:
        """The statements that touched the table (the logger runs one loop turn later)."""
        await asyncio.sleep(0)
        return [query for query in self._sent if f'"{self._table}"' in query]


@pytest.fixture
async def logged(
    postgres_server: _Server, table: str
) -> AsyncIterator[tuple[PostgresStore, _Statements, Any]]:
    """A store on a pool of its own whose statements are recorded; the log starts empty."""
    statements = _Statements(table)

    async def init(connection: Any) -> None:
        connection.add_query_logger(statements)

    logged_pool = await asyncpg.create_pool(postgres_server.url, min_size=1, max_size=4, init=init)
    store = PostgresStore(logged_pool, table=table)
    await store.open()
    statements.clear()
    yield store, statements, logged_pool
    await store.close()
    await logged_pool.close()


def _keys(n: int) -> list[str]:
    return [record_key(NS, new_session_id()) for _ in range(n)]


async def _seed(pool: Any, table: str, keys: list[str], ttl: int = 60) -> None:
    """Rows ``payload-<i>`` for ``keys``, written with raw SQL (not through the store)."""
    await pool.executemany(
        f"INSERT INTO {table} (key, data, expires_at) "  # noqa: S608
        "VALUES ($1, $2, now() + make_interval(secs => $3))",
        [(key, f"payload-{i}".encode(), ttl) for i, key in enumerate(keys)],
    )


async def _data(pool: Any, table: str, key: str) -> bytes | None:
    data: bytes | None = await pool.fetchval(f"SELECT data FROM {table} WHERE key = $1", key)  # noqa: S608
    return data


async def test_concurrent_loads_share_one_statement_and_get_each_their_own_row(
    logged: tuple[PostgresStore, _Statements, Any], pool: Any, table: str
) -> None:
    store, statements, store_pool = logged
    tokens = [new_session_id() for _ in range(20)]
    await _seed(pool, table, [record_key(NS, token) for token in tokens])
    statements.clear()
    unknown = new_session_id()
    asked = [*tokens, unknown, tokens[3]]  # an unknown token, and one loaded twice

    results = await asyncio.gather(*(store.load(token, namespace=NS) for token in asked))

    expected = [f"payload-{i}".encode() for i in range(20)]
    assert results == [*expected, None, b"payload-3"]
    sent = await statements.on_table()
    assert len(sent) == 1, sent  # 22 loads, one round trip
    assert "ANY" in sent[0]
    assert store_pool.get_size() == 1  # on one connection: the pool never had to grow


async def test_a_lone_load_goes_at_once_and_sees_only_live_rows(
    logged: tuple[PostgresStore, _Statements, Any], pool: Any, table: str
) -> None:
    store, statements, _ = logged
    live, expired = _keys(2)
    await _seed(pool, table, [live, expired])
    await _expire(pool, table, expired)
    statements.clear()

    assert await store.get(live) == b"payload-0"
    assert await store.get(expired) is None
    assert list(await asyncio.gather(store.get(expired), store.get(live))) == [None, b"payload-0"]
    assert len(await statements.on_table()) == 3


async def test_concurrent_updates_of_distinct_keys_all_land_in_one_statement(
    logged: tuple[PostgresStore, _Statements, Any], pool: Any, table: str
) -> None:
    store, statements, _ = logged
    keys = _keys(12)
    await _seed(pool, table, keys)
    statements.clear()

    results = await asyncio.gather(
        *(store.update(key, f"new-{i}".encode(), 3600 + i) for i, key in enumerate(keys))
    )

    assert results == [True] * len(keys)
    assert len(await statements.on_table()) == 1
    rows = await pool.fetch(
        f"SELECT key, data, extract(epoch FROM expires_at - now()) AS left FROM {table}"  # noqa: S608
    )
    by_key = {row["key"]: row for row in rows}
    for i, key in enumerate(keys):
        assert by_key[key]["data"] == f"new-{i}".encode()
        assert 3590 + i < by_key[key]["left"] <= 3600 + i  # each its own ttl, server time


async def test_two_concurrent_updates_of_one_key_both_succeed_and_one_of_them_is_kept(
    logged: tuple[PostgresStore, _Statements, Any], pool: Any, table: str
) -> None:
    store, statements, _ = logged
    key, other = _keys(2)
    await _seed(pool, table, [key, other])
    statements.clear()

    results = list(
        await asyncio.gather(
            store.update(key, b"first", 60),
            store.update(other, b"other", 60),
            store.update(key, b"second", 60),
        )
    )

    assert results == [True, True, True]
    assert await _data(pool, table, key) in (b"first", b"second")
    assert await _data(pool, table, other) == b"other"
    assert len(await statements.on_table()) == 1


async def test_an_update_of_an_expired_or_deleted_row_fails_alone_in_its_batch(
    logged: tuple[PostgresStore, _Statements, Any], pool: Any, table: str
) -> None:
    store, statements, _ = logged
    before, expired, deleted, after = keys = _keys(4)
    await _seed(pool, table, keys)
    await _expire(pool, table, expired)
    await pool.execute(f"DELETE FROM {table} WHERE key = $1", deleted)  # noqa: S608
    statements.clear()

    results = await asyncio.gather(*(store.update(key, b"updated", 60) for key in keys))

    assert results == [True, False, False, True]
    assert len(await statements.on_table()) == 1
    assert await _data(pool, table, before) == b"updated"
    assert await _data(pool, table, after) == b"updated"
    assert await _data(pool, table, expired) == b"payload-1"  # not revived
    assert await _count(pool, table, "key = $1 AND expires_at > now()", expired) == 0
    assert await _data(pool, table, deleted) is None  # not re-created


async def test_concurrent_creates_share_one_statement_and_stay_create_only(
    logged: tuple[PostgresStore, _Statements, Any], pool: Any, table: str
) -> None:
    store, statements, _ = logged
    live, expired, fresh, twice = _keys(4)
    await _seed(pool, table, [live, expired])
    await _expire(pool, table, expired)
    statements.clear()

    results = list(
        await asyncio.gather(
            store.create(fresh, b"fresh", 60),
            store.create(live, b"intruder", 60),
            store.create(twice, b"twice-1", 60),
            store.create(expired, b"replaced", 60),
            store.create(twice, b"twice-2", 60),
        )
    )

    # The second create of one key finds the first one's row live, as it would if the
    # two ran one after the other.
    assert results == [True, False, True, True, False]
    assert len(await statements.on_table()) == 1
    assert await _data(pool, table, fresh) == b"fresh"
    assert await _data(pool, table, live) == b"payload-0"
    assert await _data(pool, table, twice) == b"twice-1"
    assert await _data(pool, table, expired) == b"replaced"
    assert await store.get(expired) == b"replaced"  # live again, with the new ttl


async def test_an_item_the_database_rejects_fails_alone_in_its_batch(
    store: PostgresStore, pool: Any, table: str
) -> None:
    keys = _keys(3)
    await _seed(pool, table, keys)
    # A TTL past PostgreSQL's timestamp range makes the whole batched statement fail.
    with pytest.raises(StoreError, match="failed a session query"):
        await store.update(keys[1], b"never", 10**15)

    results = await asyncio.gather(
        store.update(keys[0], b"ok-0", 60),
        store.update(keys[1], b"never", 10**15),
        store.update(keys[2], b"ok-2", 60),
        return_exceptions=True,
    )

    assert results[0] is True and results[2] is True
    assert isinstance(results[1], StoreError)
    assert not isinstance(results[1], StoreUnavailable)
    assert [await _data(pool, table, key) for key in keys] == [b"ok-0", b"payload-1", b"ok-2"]


async def test_a_batch_locks_its_rows_in_key_order(
    store: PostgresStore, pool: Any, table: str
) -> None:
    # Two batches that lock the same rows in opposite orders deadlock. Here a transaction
    # holds the lower key; a batch that updates (higher, lower), in that order, must wait
    # for it without holding the higher key, which a single update can then still write.
    low, high = sorted(_keys(2))
    await _seed(pool, table, [high, low])  # heap order too puts the higher key first
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute(f"SELECT 1 FROM {table} WHERE key = $1 FOR UPDATE", low)  # noqa: S608
        batch = asyncio.gather(store.update(high, b"batch", 60), store.update(low, b"batch", 60))
        for _ in range(200):  # until the batch waits on the row lock
            if await _count(pool, "pg_stat_activity", "wait_event_type = 'Lock'"):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the batch never waited for the locked row")

        assert await asyncio.wait_for(store.update(high, b"alone", 60), timeout=3) is True
        assert not batch.done()
    assert list(await asyncio.wait_for(batch, timeout=3)) == [True, True]
    assert await _data(pool, table, high) == b"batch"
    assert await _data(pool, table, low) == b"batch"


# --- DDL ---------------------------------------------------------------------------------------


async def test_open_twice_is_idempotent(postgres_server: _Server, pool: Any, table: str) -> None:
    store = PostgresStore(postgres_server.url, table=table)
    try:
        await store.open()
        await store.open()
        token = await store.save(None, b"data", ttl=60, namespace=NS)
        assert token is not None
    finally:
        await store.close()
    # A second store on an existing table (with its rows) opens fine and sees them.
    again = PostgresStore(pool, table=table)
    await again.open()
    assert await again.load(token, namespace=NS) == b"data"
    await again.close()
    assert await _exists(pool, f"{table}_expires_at_idx")


async def test_app_instances_starting_together_create_the_table_once(
    postgres_server: _Server, pool: Any
) -> None:
    for _ in range(5):
        table = f"race_{secrets.token_hex(6)}"
        stores = [PostgresStore(postgres_server.url, table=table) for _ in range(4)]
        try:
            await asyncio.gather(*(store.open() for store in stores))
            tokens = [await store.save(None, b"x", ttl=60, namespace=NS) for store in stores]
            assert None not in tokens
        finally:
            await asyncio.gather(*(store.close() for store in stores))
        assert await _count(pool, table) == 4


async def test_first_use_without_open_creates_the_table(pool: Any, table: str) -> None:
    store = PostgresStore(pool, table=table)
    assert not await _exists(pool, table)  # the constructor does no I/O
    assert await store.load(new_session_id(), namespace=NS) is None
    assert await _exists(pool, table)
    await store.close()


async def test_schema_option_puts_the_table_in_that_schema(pool: Any, table: str) -> None:
    schema = f"schema_{secrets.token_hex(4)}"
    await pool.execute(f"CREATE SCHEMA {schema}")
    store = PostgresStore(pool, table=table, schema=schema)
    await store.open()
    token = await store.save(None, b"data", ttl=60, namespace=NS)
    assert token is not None
    await store.close()

    assert await _count(pool, f"{schema}.{table}") == 1
    assert await _exists(pool, f"{schema}.{table}_expires_at_idx")
    assert not await _exists(pool, f"public.{table}")


async def test_missing_schema_is_reported_clearly(pool: Any, table: str) -> None:
    store = PostgresStore(pool, table=table, schema="no_such_schema")
    with pytest.raises(StoreError, match=r"schema .*no_such_schema.* does not exist"):
        await store.open()
    await store.close()


async def test_create_table_false_issues_no_ddl_and_reports_the_missing_table(
    pool: Any, table: str
) -> None:
    store = PostgresStore(pool, table=table, create_table=False)
    with pytest.raises(StoreError, match=f'table "{table}" does not exist.*create_table=True'):
        await store.open()
    with pytest.raises(StoreError, match="does not exist"):
        await store.load(new_session_id(), namespace=NS)
    assert not await _exists(pool, table)

    # The operator creates the table (here from the store's own DDL); the store then works.
    for statement in store.ddl:
        await pool.execute(statement)
    await store.open()
    token = await store.save(None, b"data", ttl=60, namespace=NS)
    assert token is not None
    assert await store.load(token, namespace=NS) == b"data"
    await store.close()


async def test_create_table_false_accepts_a_table_without_our_index(pool: Any, table: str) -> None:
    await pool.execute(
        f"CREATE TABLE {table} (key text PRIMARY KEY, data bytea NOT NULL, "
        "expires_at timestamptz NOT NULL)"
    )
    store = PostgresStore(pool, table=table, create_table=False)
    await store.open()
    assert await store.save(None, b"data", ttl=60, namespace=NS) is not None
    await store.close()
    assert not await _exists(pool, f"{table}_expires_at_idx")


async def test_a_reserved_word_works_as_table_name(pool: Any) -> None:
    schema = f"schema_{secrets.token_hex(4)}"
    await pool.execute(f"CREATE SCHEMA {schema}")
    store = PostgresStore(pool, table="user", schema=schema)
    token = await store.save(None, b"data", ttl=60, namespace=NS)
    assert token is not None
    assert await store.load(token, namespace=NS) == b"data"
    await store.close()
    assert await _count(pool, f'{schema}."user"') == 1


# --- purge -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("expired", "batch_size"), [(2500, 1000), (2000, 1000), (5, 1000)])
async def test_purge_deletes_only_expired_rows_in_batches(
    store: PostgresStore, pool: Any, table: str, expired: int, batch_size: int
) -> None:
    await pool.execute(
        f"INSERT INTO {table} (key, data, expires_at) "  # noqa: S608
        "SELECT md5(i::text), '\\x00'::bytea, now() + interval '1 hour' "
        "FROM generate_series(1, $1) AS i",
        expired,
    )
    await _expire(pool, table)
    live = [await store.save(None, b"live", ttl=60, namespace=NS) for _ in range(10)]

    assert await store.purge_expired(batch_size=batch_size) == expired
    assert await _count(pool, table) == 10
    for token in live:
        assert token is not None
        assert await store.load(token, namespace=NS) == b"live"
    assert await store.purge_expired() == 0


async def test_purge_rejects_a_useless_batch_size(store: PostgresStore) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        await store.purge_expired(batch_size=0)


# --- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token", ["../../etc/passwd", "", "x" * 43 + "'", "' OR 1=1 --", "a" * 4096, "é" * 43]
)
async def test_malformed_tokens_never_reach_the_database(
    store: PostgresStore, pool: Any, table: str, token: str
) -> None:
    assert await store.load(token, namespace=NS) is None
    assert await store.save(token, b"data", ttl=60, namespace=NS) is None
    await store.delete(token, namespace=NS)
    assert await _count(pool, table) == 0

    # Proof without watching the server: a store that cannot connect at all still answers,
    # so it never tried.
    unreachable = PostgresStore("postgresql://nobody@127.0.0.1:1/none")
    assert await unreachable.load(token, namespace=NS) is None
    assert await unreachable.save(token, b"data", ttl=60, namespace=NS) is None
    await unreachable.delete(token, namespace=NS)
    await unreachable.close()


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table", ["", "1abc", "a-b", "a.b", 'x"; DROP TABLE y; --', "a" * 64, "naïve", None]
)
def test_bad_table_names_are_rejected(table: Any) -> None:
    with pytest.raises(ConfigurationError, match="table"):
        PostgresStore("postgresql://localhost/db", table=table)


def test_bad_schema_names_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="schema"):
        PostgresStore("postgresql://localhost/db", schema="public.x")


@pytest.mark.parametrize("target", ["mysql://localhost/db", "localhost", 42, None])
def test_only_a_postgres_dsn_or_pool_is_accepted(target: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"asyncpg\.Pool"):
        PostgresStore(target)


def test_the_constructor_does_no_io_and_hides_the_password() -> None:
    # No event loop here, and nothing listens on port 1: construction must not connect.
    store = PostgresStore("postgres://user:hunter2@127.0.0.1:1/db", table="t")
    assert "hunter2" not in repr(store)
    assert "127.0.0.1:1/db" in repr(store)


# --- pool ownership ----------------------------------------------------------------------------


async def test_a_borrowed_pool_is_left_open(pool: Any, table: str) -> None:
    store = PostgresStore(pool, table=table)
    await store.open()
    await store.close()
    await store.close()
    assert not pool.is_closing()
    assert await pool.fetchval("SELECT 1") == 1


async def test_a_store_built_from_a_dsn_closes_its_pool(
    postgres_server: _Server, pool: Any, table: str
) -> None:
    name = f"sk_{secrets.token_hex(4)}"
    store = PostgresStore(_with_param(postgres_server.url, "application_name", name), table=table)
    await store.open()
    assert await _connections(pool, name) >= 1
    await store.close()
    await store.close()  # idempotent
    assert await _wait_for_connections(pool, name, 0) == 0


async def test_concurrent_first_requests_share_one_pool(
    postgres_server: _Server, pool: Any, table: str
) -> None:
    name = f"sk_{secrets.token_hex(4)}"
    store = PostgresStore(_with_param(postgres_server.url, "application_name", name), table=table)
    try:
        results = await asyncio.gather(
            *(store.load(new_session_id(), namespace=NS) for _ in range(50))
        )
        assert results == [None] * 50
        # One pool holds at most 10 connections; a pool per first request would hold ~50.
        assert 1 <= await _connections(pool, name) <= 10
    finally:
        await store.close()
    assert await _wait_for_connections(pool, name, 0) == 0


# --- outages -----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_store_down_raises_store_unavailable_and_recovers(
    postgres_server: _Server, table: str
) -> None:
    store = PostgresStore(postgres_server.url, table=table)
    never_opened = PostgresStore(postgres_server.url, table=table)
    try:
        token = await store.save(None, b"before", ttl=600, namespace=NS)
        assert token is not None

        await _call(postgres_server.stop)
        try:
            attempts: list[Callable[[], Awaitable[object]]] = [
                lambda: store.load(token, namespace=NS),
                lambda: store.save(token, b"during", ttl=600, namespace=NS),
                lambda: store.save(None, b"during", ttl=600, namespace=NS),
                lambda: store.delete(token, namespace=NS),
                store.purge_expired,
                lambda: never_opened.load(token, namespace=NS),
            ]
            for attempt in attempts:
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match="unavailable"):
                    await asyncio.wait_for(attempt(), timeout=10)
                assert time.monotonic() - started < 5
        finally:
            await _call(postgres_server.start)

        assert await store.load(token, namespace=NS) == b"before"
        assert await store.save(token, b"after", ttl=600, namespace=NS) == token
        assert await never_opened.load(token, namespace=NS) == b"after"
    finally:
        await store.close()
        await never_opened.close()


@pytest.mark.slow
async def test_a_server_restart_is_invisible_to_the_next_request(
    postgres_server: _Server, table: str
) -> None:
    # The pool still holds connections the restart killed; the store must not fail on them.
    store = PostgresStore(postgres_server.url, table=table)
    try:
        token = await store.save(None, b"before", ttl=600, namespace=NS)
        assert token is not None
        await _call(postgres_server.stop)
        await _call(postgres_server.start)
        assert await store.load(token, namespace=NS) == b"before"
        assert await store.save(token, b"after", ttl=600, namespace=NS) == token
    finally:
        await store.close()
