"""SQLAlchemyStore on real SQLite, MariaDB and PostgreSQL (see tests/harness/servers.py).

The store-level contract runs here the way a third-party store runs it: through the public
kit, on the application's own engine (the store on its own engine runs it in
test_server_store_contract.py). The rest is what only this driver can show.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from aiohttp_sessionkit import store_from_url
from aiohttp_sessionkit.exceptions import ConfigurationError, StoreError
from aiohttp_sessionkit.ids import new_session_id, record_key
from aiohttp_sessionkit.stores.postgres import PostgresStore
from aiohttp_sessionkit.stores.sql import SQLAlchemyStore, define_table
from aiohttp_sessionkit.testing import StoreContract
from tests.stores.test_contract import COOKIE_WIRE, build_app, client_for, login, read, with_cookie

NS = "session"
DIALECTS = ["sqlite", "mariadb", "postgres"]


def unique_table() -> str:
    return f"sessions_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=DIALECTS)
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLAlchemy URL on each dialect: a temp SQLite file, the test MariaDB, PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/sessions.db"
    if request.param == "mariadb":
        url: str = request.getfixturevalue("mariadb_server").url
        return url
    dsn: str = request.getfixturevalue("postgres_server").url
    return "postgresql+asyncpg://" + dsn.split("://", 1)[1]


@pytest.fixture
async def app_engine(sql_url: str) -> AsyncIterator[AsyncEngine]:
    """The application's own engine, with SQLAlchemy's defaults (transactions, no autocommit)."""
    engine = create_async_engine(sql_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(sql_url: str) -> AsyncIterator[SQLAlchemyStore]:
    store = SQLAlchemyStore(sql_url, table=unique_table())
    yield store
    await store.close()


class TestSQLAlchemyStoreOnTheApplicationsEngine(StoreContract):
    """The public contract kit, used as a third-party store's suite would use it."""

    @pytest.fixture
    async def store(self, app_engine: AsyncEngine) -> AsyncIterator[SQLAlchemyStore]:
        store = SQLAlchemyStore(app_engine, table=unique_table())
        yield store
        await store.close()


def idle_connections(engine: AsyncEngine) -> int:
    """Connections the engine's pool holds, not checked out."""
    checked_in: int = cast(Any, engine.pool).checkedin()
    return checked_in


async def statements(engine: AsyncEngine, sql_prefix: str) -> list[str]:
    """A live list of the statements starting with ``sql_prefix`` the engine sends."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(sql_prefix):
            seen.append(statement)

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    return seen


# -- ownership ----------------------------------------------------------------------------------


async def test_a_borrowed_engine_is_left_open(app_engine: AsyncEngine) -> None:
    store = SQLAlchemyStore(app_engine, table=unique_table())
    token = await store.save(None, b"x", ttl=60, namespace=NS)
    assert token is not None
    await store.close()
    assert idle_connections(app_engine) >= 1  # its connection was not disposed of
    async with app_engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT 1")) == 1


async def test_a_store_built_from_a_url_disposes_of_its_engine(store: SQLAlchemyStore) -> None:
    token = await store.save(None, b"x", ttl=60, namespace=NS)
    assert token is not None
    assert idle_connections(store.engine) >= 1
    await store.close()
    assert idle_connections(store.engine) == 0
    assert await store.load(token, namespace=NS) == b"x"  # usable again, as after startup


def test_the_constructor_does_no_io_and_hides_the_password() -> None:
    store = SQLAlchemyStore("mysql+asyncmy://app:s3cret@127.0.0.1:1/db")  # nothing listens
    assert "s3cret" not in repr(store)
    assert "127.0.0.1:1/db" in repr(store)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (42, "got int"),
        ("not a url", "not a database URL"),
        ("mysql+pymysql://u@h/db", "needs an asyncio driver"),
        ("nosuchdb+driver://u@h/db", "knows no dialect"),
    ],
)
def test_only_async_urls_and_engines_are_accepted(target: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SQLAlchemyStore(target)


def test_a_synchronous_engine_is_refused() -> None:
    engine = sa.create_engine("sqlite://")
    with pytest.raises(ConfigurationError, match="AsyncEngine"):
        SQLAlchemyStore(engine)  # type: ignore[arg-type]
    engine.dispose()


@pytest.mark.parametrize("table", ["", "1abc", "a-b", "x; DROP TABLE users", "t" * 64, None])
def test_bad_table_names_are_rejected(table: Any) -> None:
    with pytest.raises(ConfigurationError, match="table"):
        SQLAlchemyStore("sqlite+aiosqlite:///x.db", table=table)


def test_bad_schema_names_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="schema"):
        SQLAlchemyStore("sqlite+aiosqlite:///x.db", schema="a.b")


# -- store_from_url -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:///sessions.db",
        "mysql+asyncmy://app:pw@db/app",
        "postgresql+asyncpg://app:pw@db/app",
    ],
)
def test_store_from_url_gives_the_sql_store_for_sqlalchemy_urls(url: str) -> None:
    store = store_from_url(url)
    assert isinstance(store, SQLAlchemyStore)
    assert store.engine.url.drivername == url.split(":", 1)[0]


def test_plain_postgresql_urls_keep_meaning_the_postgres_store() -> None:
    assert isinstance(store_from_url("postgresql://app@db/app"), PostgresStore)


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("mysql+asyncmy://app@db/app", "asyncmy", "mysql"),
        ("mysql+aiomysql://app@db/app", "aiomysql", r"sql\]\" aiomysql"),
        ("sqlite+aiosqlite:///s.db", "aiosqlite", "sqlite"),
    ],
)
def test_a_missing_driver_fails_at_setup_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    with pytest.raises(ConfigurationError, match=rf"aiohttp-sessionkit\[{extra}"):
        store_from_url(url)


def test_a_missing_sqlalchemy_fails_naming_the_sql_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    monkeypatch.delitem(sys.modules, "aiohttp_sessionkit.stores.sql")
    with pytest.raises(ConfigurationError, match=r"aiohttp-sessionkit\[sql\]"):
        store_from_url("sqlite+aiosqlite:///s.db")


# -- the table, migrations and DDL --------------------------------------------------------------


async def test_the_table_lives_on_the_applications_metadata_for_migrations(
    app_engine: AsyncEngine,
) -> None:
    metadata = sa.MetaData()
    name = unique_table()
    table = define_table(metadata, name)
    store = SQLAlchemyStore(app_engine, table=name, create_table=False)
    assert {c.name for c in table.columns} == {c.name for c in store.table.columns}
    with pytest.raises(StoreError, match=r"does not exist.*define_table"):
        await store.open()
    async with app_engine.begin() as conn:  # what a migration does
        await conn.run_sync(metadata.create_all)
    token = await store.save(None, b"x", ttl=60, namespace=NS)
    assert token is not None
    assert await store.load(token, namespace=NS) == b"x"
    await store.close()


async def test_create_table_false_issues_no_ddl(app_engine: AsyncEngine) -> None:
    ddl = await statements(app_engine, "CREATE")
    store = SQLAlchemyStore(app_engine, table=unique_table(), create_table=False)
    with pytest.raises(StoreError, match="does not exist"):
        await store.save(None, b"x", ttl=60, namespace=NS)
    assert ddl == []
    await store.close()


async def test_app_instances_starting_together_create_the_table_once(sql_url: str) -> None:
    table = unique_table()
    stores = [SQLAlchemyStore(sql_url, table=table) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        token = await stores[0].save(None, b"shared", ttl=60, namespace=NS)
        assert token is not None
        for other in stores[1:]:
            assert await other.load(token, namespace=NS) == b"shared"
    finally:
        for s in stores:
            await s.close()


async def test_the_schema_option_puts_the_table_in_that_schema(postgres_server: Any) -> None:
    url = "postgresql+asyncpg://" + postgres_server.url.split("://", 1)[1]
    schema = f"s_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        store = SQLAlchemyStore(engine, table="sessions", schema=schema)
        token = await store.save(None, b"x", ttl=60, namespace=NS)
        assert token is not None
        async with engine.connect() as conn:
            found = await conn.scalar(
                sa.text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema},
            )
        assert found == 1
    finally:
        await engine.dispose()


# -- rows, expiry, purge ------------------------------------------------------------------------


async def test_rows_are_keyed_by_hash_and_hold_no_session_id(store: SQLAlchemyStore) -> None:
    token = await store.save(None, b"payload", ttl=60, namespace=NS)
    assert token is not None
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(store.table))).all()
    assert [(row.key, row.data) for row in rows] == [(record_key(NS, token), b"payload")]
    assert token not in repr(rows)


async def test_purge_deletes_only_expired_rows_in_batches(store: SQLAlchemyStore) -> None:
    live = await store.save(None, b"live", ttl=60, namespace=NS)
    assert live is not None
    expired = [{"key": record_key(NS, new_session_id()), "data": b"old", "expires_at": 1000 + i}
               for i in range(5)]  # fmt: skip
    async with store.engine.connect() as conn:
        await conn.execute(sa.insert(store.table), expired)
        await conn.commit()
    assert await store.purge_expired(batch_size=2) == 5
    assert await store.purge_expired(batch_size=2) == 0
    assert await store.load(live, namespace=NS) == b"live"


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "10"])
async def test_purge_rejects_a_useless_batch_size(store: SQLAlchemyStore, size: Any) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        await store.purge_expired(batch_size=size)


# -- shared statements --------------------------------------------------------------------------


async def test_concurrent_loads_share_one_statement(store: SQLAlchemyStore) -> None:
    tokens = [await store.save(None, b"%d" % i, ttl=60, namespace=NS) for i in range(20)]
    selects = await statements(store.engine, "SELECT")
    loaded = await asyncio.gather(*(store.load(t or "", namespace=NS) for t in tokens))
    assert loaded == [b"%d" % i for i in range(20)]
    assert len(selects) == 1


async def test_concurrent_creates_share_one_statement(store: SQLAlchemyStore) -> None:
    await store.open()
    inserts = await statements(store.engine, "INSERT")
    tokens = await asyncio.gather(
        *(store.save(None, b"c", ttl=60, namespace=NS) for _ in range(20))
    )
    assert None not in tokens and len(set(tokens)) == 20
    assert len(inserts) == 1


async def test_concurrent_updates_share_one_update_statement_and_skip_dead_rows(
    store: SQLAlchemyStore,
) -> None:
    tokens = [await store.save(None, b"old", ttl=60, namespace=NS) or "" for _ in range(20)]
    await store.delete(tokens[0], namespace=NS)  # logged out: its update must find nothing
    updates = await statements(store.engine, "UPDATE")
    results = await asyncio.gather(
        *(store.save(t, b"new %d" % i, ttl=60, namespace=NS) for i, t in enumerate(tokens))
    )
    assert results == [None, *tokens[1:]]
    assert len(updates) == 1
    assert await store.load(tokens[0], namespace=NS) is None
    for i, token in enumerate(tokens[1:], start=1):
        assert await store.load(token, namespace=NS) == b"new %d" % i


async def test_a_create_batch_with_a_taken_key_falls_back_to_one_by_one(
    store: SQLAlchemyStore,
) -> None:
    taken = record_key(NS, new_session_id())
    assert await store.create(taken, b"first", 60) is True
    fresh = [record_key(NS, new_session_id()) for _ in range(5)]
    results = await asyncio.gather(
        store.create(taken, b"second", 60), *(store.create(k, b"new", 60) for k in fresh)
    )
    assert results == [False] + [True] * 5
    assert await store.get(taken) == b"first"


# -- SQLite -------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


async def test_sqlite_runs_in_wal_mode(sqlite_file: Path) -> None:
    store = SQLAlchemyStore(f"sqlite+aiosqlite:///{sqlite_file}")
    try:
        await store.open()
        async with store.engine.connect() as conn:
            assert await conn.scalar(sa.text("PRAGMA journal_mode")) == "wal"
    finally:
        await store.close()


async def test_two_processes_writing_one_sqlite_file_never_see_database_is_locked(
    sqlite_file: Path,
) -> None:
    # Two stores, each with its own engine and pool: to SQLite, two processes.
    url = f"sqlite+aiosqlite:///{sqlite_file}"
    first, second = SQLAlchemyStore(url), SQLAlchemyStore(url)
    try:
        tokens = [await first.save(None, b"0", ttl=60, namespace=NS) for _ in range(10)]
        jobs: list[Awaitable[object]] = []
        for i in range(100):
            token = tokens[i % 10]
            assert token is not None
            writer = first if i % 2 else second
            jobs.append(writer.save(token, b"%d" % i, ttl=60, namespace=NS))
            jobs.append(writer.save(None, b"new", ttl=60, namespace=NS))
            jobs.append(writer.load(token, namespace=NS))
        results = await asyncio.gather(*jobs)  # any "database is locked" would raise here
        assert all(r is not None for r in results)
    finally:
        await first.close()
        await second.close()


@pytest.fixture
def locked(sqlite_file: Path) -> Iterator[sqlite3.Connection]:
    """A raw connection to the file, for a test to hold SQLite's write lock with."""
    conn = sqlite3.connect(sqlite_file, isolation_level=None)
    yield conn
    conn.close()


async def test_a_locked_sqlite_database_answers_503_not_500_and_recovers(
    aiohttp_client: Any, sqlite_file: Path, locked: sqlite3.Connection
) -> None:
    store = SQLAlchemyStore(f"sqlite+aiosqlite:///{sqlite_file}")
    client = await client_for(aiohttp_client, build_app(store, COOKIE_WIRE, store_timeout=0.5))
    cookie = await login(client, COOKIE_WIRE, user="alice")
    locked.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        response = await client.post("/incr", headers=with_cookie(cookie))
        assert response.status == 503
        assert "Set-Cookie" not in response.headers
        # WAL: reads go on
        assert (await read(client, COOKIE_WIRE, cookie))["data"] == {"user": "alice"}
    finally:
        locked.execute("COMMIT")
    response = await client.post("/incr", headers=with_cookie(cookie))
    assert response.status == 200
    assert await response.json() == 1


async def test_a_write_that_timed_out_on_a_locked_sqlite_database_never_lands_later(
    sqlite_file: Path, locked: sqlite3.Connection
) -> None:
    store = SQLAlchemyStore(f"sqlite+aiosqlite:///{sqlite_file}")
    try:
        token = await store.save(None, b"before", ttl=60, namespace=NS)
        assert token is not None
        locked.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):  # the session layer's store_timeout
                    await store.save(token, b"late", ttl=60, namespace=NS)
            # Time for a write still waiting in the driver's thread to reach the lock.
            await asyncio.sleep(0.3)
        finally:
            locked.execute("COMMIT")
        await asyncio.sleep(0.3)  # ... and to commit, had it been waiting there
        assert await store.load(token, namespace=NS) == b"before"
    finally:
        await store.close()


async def test_aiomysql_works_or_is_refused_at_setup_when_its_pymysql_breaks_it(
    mariadb_server: Any,
) -> None:
    url = mariadb_server.url.replace("+asyncmy://", "+aiomysql://")
    from pymysql import converters  # type: ignore[import-untyped]  # no stubs installed

    if not callable(getattr(converters, "escape_bytes_prefixed", None)):
        # aiomysql 0.3.2 with PyMySQL >= 1.2.3 fails on every bytes parameter: say so now,
        # not with a 500 on the first request.
        with pytest.raises(ConfigurationError, match=r"aiomysql#1080.*mysql\+asyncmy"):
            SQLAlchemyStore(url, table=unique_table())
        return
    store = SQLAlchemyStore(url, table=unique_table())
    try:
        token = await store.save(None, bytes(range(256)), ttl=60, namespace=NS)
        assert token is not None
        assert await store.load(token, namespace=NS) == bytes(range(256))
    finally:
        await store.close()


async def test_a_batch_that_loses_a_deadlock_on_mariadb_is_run_again(mariadb_server: Any) -> None:
    # InnoDB breaks a lock cycle by rolling back the lighter transaction; the server's
    # advice ("try restarting transaction") is what the store follows, so concurrent
    # requests see their writes succeed instead of a 503.
    store = SQLAlchemyStore(mariadb_server.url, table=unique_table())
    other = create_async_engine(mariadb_server.url)
    try:
        await store.open()
        first = await store.save(None, b"one", ttl=600, namespace=NS)
        second = await store.save(None, b"two", ttl=600, namespace=NS)
        assert first is not None and second is not None
        table = store.table
        async with other.connect() as conn:
            await conn.execute(sa.text("BEGIN"))
            # Heavier than the store's transaction, so InnoDB picks the store's as the victim.
            await conn.execute(
                table.insert(),
                [
                    {"key": record_key(NS, new_session_id()), "data": b"x", "expires_at": 2**62}
                    for _ in range(50)
                ],
            )
            await conn.execute(
                sa.select(table.c.key)
                .where(table.c.key == record_key(NS, second))
                .with_for_update()
            )
            # One batch updates both rows, locking in key order; it waits for the row held here.
            saves = asyncio.gather(
                store.save(first, b"one-b", ttl=600, namespace=NS),
                store.save(second, b"two-b", ttl=600, namespace=NS),
            )
            await asyncio.sleep(0.5)
            # Now this transaction waits for the row the batch holds: a lock cycle.
            await conn.execute(
                sa.select(table.c.key).where(table.c.key == record_key(NS, first)).with_for_update()
            )
            await conn.execute(sa.text("COMMIT"))
        assert list(await saves) == [first, second]
        assert await store.load(first, namespace=NS) == b"one-b"
        assert await store.load(second, namespace=NS) == b"two-b"
    finally:
        await other.dispose()
        await store.close()
