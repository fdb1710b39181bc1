"""SQL store on SQLAlchemy's asyncio engine: SQLite, MySQL/MariaDB, PostgreSQL.

One row per session: the record key (a SHA-256 hex digest, never the session id), the
payload and the expiry time. Rows are not removed by the database when they expire: every
query filters on ``expires_at`` and :meth:`SQLAlchemyStore.purge_expired` deletes the
leftovers in bounded batches.

``expires_at`` holds Unix time in milliseconds (one integer column compares the same way on
every dialect) on the database's clock: every statement computes "now" on the server, so
application hosts whose clocks disagree still agree on what has expired, and a host whose
clock runs fast does not purge live sessions. (SQLite runs in the application's process:
its clock is that host's.)

Statements use SQLAlchemy Core only, so the same code runs on every dialect. Where it pays
(measured, see ``_BATCHING``) concurrent requests share statements through
:class:`~aiohttp_sessionkit.batching.Batcher`: the loads issued in one event-loop iteration
go as one ``SELECT ... WHERE key IN (...)``, the creates as one multi-row ``INSERT``, the
updates as one locking ``SELECT`` and one ``UPDATE`` in a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

try:
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'SQLAlchemyStore needs SQLAlchemy: pip install "aiohttp-sessionkit[sql]"'
    ) from exc

from ..exceptions import ConfigurationError, StoreError, StoreUnavailable
from ._db import MAX_IDENTIFIER, DatabaseStore, Swap, Write, check_batch_size, identifier
from ._startup import open_or_defer

__all__ = ["DEFAULT_TABLE", "SQLAlchemyStore", "define_table"]

log = logging.getLogger("aiohttp_sessionkit")

#: The table name used when none is given.
DEFAULT_TABLE = "aiohttp_sessions"

_POOL_SIZE = 10
#: Seconds a SQLite statement waits for another process's lock, in the driver's thread.
#: Short, because asyncio cannot cancel that thread: a write that is still waiting there
#: when its request has answered 503 would commit later. Longer waits happen in asyncio,
#: between retries, where a cancelled request leaves nothing behind.
_SQLITE_LOCK_WAIT = 0.05
#: Seconds of retries on a locked SQLite database before the store reports it unavailable.
_SQLITE_BUSY_TIMEOUT = 30.0
#: MySQL closes connections idle for longer than wait_timeout (8 h by default); recycle first.
_POOL_RECYCLE = 3600
#: Dialects whose statements go on running on the server after their caller gave up, and
#: that the store therefore cancels there (SQLite runs in-process: nothing runs on).
_CANCELLABLE = frozenset({"postgresql", "mysql", "mariadb"})
#: MySQL/MariaDB: the statement is killed by the connection's id, over another connection.
#: PostgreSQL needs no id: cancelling the task that waits on asyncpg makes asyncpg send its
#: own cancel request, which a pooler such as PgBouncer routes to the right server
#: connection (pg_cancel_backend(pid) behind one could hit another client's query).
_KILL_SQL = {"mysql": "KILL QUERY {}", "mariadb": "KILL QUERY {}"}
_ID_SQL = "SELECT CONNECTION_ID()"
#: Where a connection's id on the server is kept, in its pool entry's ``info``.
_SERVER_ID = "aiohttp_sessionkit.server_id"
#: How to install the driver of each URL scheme.
_INSTALL = {
    "aiosqlite": 'pip install "aiohttp-sessionkit[sqlite]"',
    "asyncmy": 'pip install "aiohttp-sessionkit[mysql]"',
    "aiomysql": 'pip install "aiohttp-sessionkit[sql]" aiomysql',
    "asyncpg": 'pip install "aiohttp-sessionkit[sql,postgres]"',
}

#: Which operations share statements, per dialect: shared statements paid on every dialect
#: for every operation (scripts/measure-sql-batching.py; figures in docs/sql.md). Updates
#: paid only as one locking SELECT and one UPDATE (see _update_locked); one UPDATE per row
#: in a transaction was slower than unbatched on MariaDB. Compare-and-swaps (replace) are
#: batched the same way, as the updates they stand in for when sessions merge.
_BATCHING: dict[str, frozenset[str]] = {
    "sqlite": frozenset({"get", "create", "update", "replace"}),
    "postgresql": frozenset({"get", "create", "update", "replace"}),
    "mysql": frozenset({"get", "create", "update", "replace"}),
    "mariadb": frozenset({"get", "create", "update", "replace"}),
}
#: Other dialects: the portable statements that every dialect runs the same way.
_DEFAULT_BATCHING = frozenset({"get", "create"})

_T = TypeVar("_T")


def define_table(
    metadata: sa.MetaData, name: str = DEFAULT_TABLE, *, schema: str | None = None
) -> sa.Table:
    """Define the session table on ``metadata`` (your application's own, for Alembic).

    Columns: ``key`` (64 lowercase hex characters, the primary key), ``data`` (the payload)
    and ``expires_at`` (Unix time in milliseconds, indexed for the purge).
    """
    _identifier(name, "table")
    if schema is not None:
        _identifier(schema, "schema")
    return sa.Table(
        name,
        metadata,
        # ASCII on MySQL: a utf8mb4 key would take four bytes a character in the index.
        sa.Column(
            "key",
            sa.String(64).with_variant(
                mysql.VARCHAR(64, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
            ),
            primary_key=True,
        ),
        # MySQL's BLOB stops at 64 KiB; MEDIUMBLOB holds 16 MiB like the other dialects' types.
        sa.Column(
            "data",
            sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.BigInteger(), nullable=False, index=True),
        schema=schema,
    )


_identifier = functools.partial(
    identifier,
    store="SQLAlchemyStore",
    too_long=f"{MAX_IDENTIFIER} characters, which not every database accepts",
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


#: The database's own clock, in Unix milliseconds, per dialect: every host of the
#: application then agrees on what has expired, however wrong its own clock is.
#: UTC_TIMESTAMP against the epoch, not UNIX_TIMESTAMP(NOW()): no session time zone (and no
#: daylight-saving hour read twice) is involved. SQLite's clock is the application host's
#: (it runs in the application's process), so a skewed host still sees the skew there.
_SERVER_NOW_MS = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)",
    "mysql": "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000)",
    "mariadb": "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000)",
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
}


def _clock(dialect: str) -> sa.ColumnElement[int]:
    """The current time in a statement: the database's clock, or the application's where
    we know no expression for it (a dialect other than the three above)."""
    sql = _SERVER_NOW_MS.get(dialect)
    if sql is None:
        return sa.bindparam("now", type_=sa.BigInteger(), callable_=_now_ms)
    return sa.literal_column(sql, sa.BigInteger())


def _engine_for(url: sa.URL) -> AsyncEngine:
    """An engine this store owns: autocommit (one statement, one round trip), sized pool."""
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            # Each connection would open a database of its own: share one connection.
            options["poolclass"] = sa.StaticPool
        options["connect_args"] = {"timeout": _SQLITE_LOCK_WAIT}
    else:
        options.update(pool_size=_POOL_SIZE, max_overflow=0, pool_recycle=_POOL_RECYCLE)
    engine = create_async_engine(url, **options)
    if url.get_backend_name() == "sqlite":
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _limit_server_time(engine: AsyncEngine, limit: Callable[[], float | None]) -> None:
    """Give each new connection of ``engine`` the server-side limit ``limit()`` returns.

    PostgreSQL: ``statement_timeout`` and ``lock_timeout``, as asyncpg ``server_settings``
    (no extra round trip). MariaDB: ``max_statement_time`` and ``innodb_lock_wait_timeout``;
    MySQL: ``max_execution_time`` (reads only) and ``innodb_lock_wait_timeout`` (one
    ``SET SESSION`` per connection). Read when a connection opens, so a ``store_timeout``
    learnt after the engine was built (setup() runs after the store is constructed)
    applies to every connection.
    """
    sync_engine = engine.sync_engine
    if engine.dialect.name == "postgresql":

        def server_settings(_dialect: Any, _record: Any, _args: Any, params: Any) -> None:
            seconds = limit()
            if seconds is not None:
                ms = str(max(1, int(seconds * 1000)))
                settings = dict(params.get("server_settings") or {})
                settings.update(statement_timeout=ms, lock_timeout=ms)
                params["server_settings"] = settings

        sa.event.listen(sync_engine, "do_connect", server_settings)
    elif engine.dialect.name in ("mysql", "mariadb"):

        def set_session(dbapi_connection: Any, _record: Any) -> None:
            seconds = limit()
            if seconds is None:
                return
            # InnoDB counts lock waits in whole seconds (at least 1); MariaDB's statement
            # limit takes fractions and also ends lock waits; MySQL's applies to reads only.
            lock_wait = max(1, int(seconds))
            if getattr(engine.dialect, "is_mariadb", False):
                statement = f"max_statement_time = {seconds:.3f}"
            else:
                statement = f"max_execution_time = {max(1, int(seconds * 1000))}"
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {lock_wait}, {statement}")
            finally:
                cursor.close()

        sa.event.listen(sync_engine, "connect", set_session)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run while a write commits; NORMAL syncs at checkpoints only, which
    # in WAL mode loses no committed data on an application crash (only on power loss).
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_LOCK_WAIT * 1000)}")
    finally:
        cursor.close()


def _check_driver(engine: AsyncEngine) -> None:
    """Refuse at setup a driver known to fail every session write."""
    if engine.dialect.driver != "aiomysql":
        return
    # aiomysql 0.3.2 calls PyMySQL's escape_bytes_prefixed, which PyMySQL 1.2.3 turned into a
    # placeholder string: every bytes parameter then fails (aio-libs/aiomysql#1080).
    from pymysql import converters  # type: ignore[import-untyped]  # no stubs installed

    if not callable(getattr(converters, "escape_bytes_prefixed", None)):
        import pymysql

        raise ConfigurationError(
            f"mysql+aiomysql:// cannot send binary data with the installed PyMySQL "
            f"{pymysql.__version__} (aio-libs/aiomysql#1080); use mysql+asyncmy:// "
            '(pip install "aiohttp-sessionkit[mysql]") or pip install "PyMySQL<1.2.3"'
        )


def _describe(engine: AsyncEngine) -> str:
    url = engine.url  # never its password
    if url.get_backend_name() == "sqlite":
        where = url.database or "memory"
    else:
        host = url.host or "localhost"
        where = f"{host}:{url.port}/{url.database}" if url.port else f"{host}/{url.database}"
    return f"{url.get_backend_name()} at {where}"


class SQLAlchemyStore(DatabaseStore[AsyncEngine]):
    """Sessions in a SQL table, through an ``AsyncEngine`` it creates (from a URL) or borrows.

    ``url_or_engine``: a SQLAlchemy URL with an asyncio driver (``sqlite+aiosqlite:///path``,
    ``mysql+asyncmy://user:pw@host/db``, ``mysql+aiomysql://...``,
    ``postgresql+asyncpg://...``), or the application's own ``AsyncEngine``, which the store
    borrows and never disposes of. ``table`` and ``schema`` name the table;
    ``create_table=False`` leaves the DDL to your migrations (see
    :func:`~aiohttp_sessionkit.stores.sql.define_table`).
    """

    def __init__(
        self,
        url_or_engine: str | sa.URL | AsyncEngine,
        *,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        create_table: bool = True,
    ) -> None:
        if isinstance(url_or_engine, (str, sa.URL)):
            try:
                url = sa.make_url(url_or_engine)
            except sa.exc.ArgumentError as exc:
                raise ConfigurationError(f"SQLAlchemyStore: not a database URL ({exc})") from None
            driver = url.get_driver_name()
            try:
                dialect = url.get_dialect()
                if not getattr(dialect, "is_async", False):
                    raise ConfigurationError(
                        f"SQLAlchemyStore needs an asyncio driver; {url.drivername}:// is not "
                        "one. Use sqlite+aiosqlite://, mysql+asyncmy://, mysql+aiomysql:// or "
                        "postgresql+asyncpg://"
                    )
                engine = _engine_for(url)
            except ImportError as exc:
                how = _INSTALL.get(driver, f"install {driver}")
                raise ConfigurationError(
                    f"SQLAlchemyStore: the {url.drivername}:// driver is not installed: {how} "
                    f"({exc})"
                ) from exc
            except sa.exc.NoSuchModuleError as exc:
                raise ConfigurationError(
                    f"SQLAlchemyStore: SQLAlchemy knows no dialect {url.drivername!r} ({exc})"
                ) from None
            self._owned = True
        elif isinstance(url_or_engine, AsyncEngine):
            engine = url_or_engine
            self._owned = False
        else:
            raise ConfigurationError(
                "SQLAlchemyStore needs a database URL ('sqlite+aiosqlite:///sessions.db') or "
                f"a sqlalchemy.ext.asyncio.AsyncEngine, got {type(url_or_engine).__name__}"
            )
        _check_driver(engine)
        self.engine: AsyncEngine = engine
        """The engine the store uses: its own (from a URL) or the application's."""
        self._where = _describe(engine) + ("" if self._owned else " (application's engine)")
        self._dialect = engine.dialect.name
        self._sqlite = self._dialect == "sqlite"
        # Our own engine runs in autocommit mode: each statement is its own transaction with
        # no BEGIN/COMMIT round trips. A borrowed engine keeps its settings; we commit.
        self._autocommit = self._owned
        self._create_table = create_table
        self.table: sa.Table = define_table(sa.MetaData(), table, schema=schema)
        """The session table, as SQLAlchemy Core sees it."""

        t = self.table.c
        # Expiry times are written and compared on the database's clock (see _clock); "ms"
        # is a TTL in milliseconds, added to it.
        now = self._now = _clock(self._dialect)
        self._sql_get = sa.select(t.data).where(t.key == sa.bindparam("key"), t.expires_at > now)
        self._sql_get_many = sa.select(t.key, t.data).where(
            t.key.in_(sa.bindparam("keys", expanding=True)), t.expires_at > now
        )
        self._sql_insert = sa.insert(self.table).values(
            key=sa.bindparam("k"), data=sa.bindparam("d"), expires_at=now + sa.bindparam("ms")
        )
        self._sql_update = (
            sa.update(self.table)
            .where(t.key == sa.bindparam("k"), t.expires_at > now)
            .values(data=sa.bindparam("d"), expires_at=now + sa.bindparam("ms"))
        )
        # Compare-and-swap in the WHERE clause. A concurrent write of the row makes this one
        # wait for its lock and then test the row as committed (PostgreSQL re-checks it,
        # InnoDB's UPDATE reads the latest version, SQLite has one writer at a time), so of
        # two swaps from the same payload the second finds another. The row count is rows
        # matched, not changed, on MySQL/MariaDB too (SQLAlchemy connects with
        # CLIENT_FOUND_ROWS), so a swap that writes the same bytes still counts.
        self._sql_replace = (
            sa.update(self.table)
            .where(t.key == sa.bindparam("k"), t.data == sa.bindparam("e"), t.expires_at > now)
            .values(data=sa.bindparam("d"), expires_at=now + sa.bindparam("ms"))
        )
        # Run again after a connection died mid-statement, the swap may find its own write,
        # committed before the answer was lost: holding the new payload counts as done.
        # (Without this the caller would merge its changes onto its own save: flash
        # messages it added would be added twice.)
        self._sql_replace_again = (
            sa.update(self.table)
            .where(
                t.key == sa.bindparam("k"),
                sa.or_(t.data == sa.bindparam("e"), t.data == sa.bindparam("d")),
                t.expires_at > now,
            )
            .values(data=sa.bindparam("d"), expires_at=now + sa.bindparam("ms"))
        )
        self._sql_delete = sa.delete(self.table).where(t.key == sa.bindparam("key"))
        # Only a row already expired: a create may replace it; the purge deletes it.
        self._sql_delete_expired = sa.delete(self.table).where(
            t.key.in_(sa.bindparam("keys", expanding=True)), t.expires_at <= now
        )
        self._sql_expired_keys = (
            sa.select(t.key).where(t.expires_at <= now).limit(sa.bindparam("n"))
        )

        # SQLite takes one writer at a time. Writers of this process queue here, in asyncio,
        # rather than in SQLite's busy handler, which sleeps in growing steps.
        self._write_lock = asyncio.Lock() if self._dialect == "sqlite" else None
        # SQLite has no server; a borrowed engine keeps its own settings.
        server_limits = self._owned and not self._sqlite
        super().__init__(
            server_limits=server_limits,
            batching=_BATCHING.get(self._dialect, _DEFAULT_BATCHING),
        )
        # The cancel of a statement cut short goes over a connection of its own.
        self._canceller: AsyncEngine | None = None
        self._abandoned: set[AsyncConnection] = set()  # their caller gave up: never commit
        if server_limits:
            _limit_server_time(engine, self._server_limit)

    def __repr__(self) -> str:
        return f"<SQLAlchemyStore {self.table.fullname} on {self._where}>"

    async def open(self) -> None:
        """Check the table, creating it with ``create_table``. Idempotent.

        A database that cannot be reached does not stop the application: ``open`` logs it
        once and returns, and the table is checked on first use (requests that need a
        session get 503 meanwhile). A missing table without ``create_table`` still raises
        :class:`~aiohttp_sessionkit.StoreError`.
        """
        await open_or_defer(self, self._prepare)

    async def _dispose(self) -> None:
        if self._canceller is not None:
            canceller, self._canceller = self._canceller, None
            await canceller.dispose()
        if self._owned:
            # The engine stays usable: a later call opens a fresh pool, as after startup.
            await self.engine.dispose()

    # -- the record operations (get, create and update go through DatabaseStore's batchers)

    async def remove(self, key: str) -> None:
        # Not batched: logouts are rare.
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(self._sql_delete, {"key": key})

        await self._run(work, write=True)

    # -- one statement per call

    async def _get_one(self, key: str) -> bytes | None:
        async def work(conn: AsyncConnection) -> bytes | None:
            result = await conn.execute(self._sql_get, {"key": key})
            data: bytes | None = result.scalar()
            return data

        return await self._run(work)

    async def _create_one(self, write: Write) -> bool:
        key, data, ttl = write
        row = {"k": key, "d": data, "ms": ttl * 1000}

        async def insert(conn: AsyncConnection) -> None:
            await conn.execute(self._sql_insert, row)

        try:
            await self._run(insert, write=True)
            return True
        except _Duplicate:
            pass
        # The key exists. A live row wins; an expired one may be replaced. Never seen with
        # fresh random keys, so the slow path costs nothing in practice.
        if not await self._delete_expired([key]):
            return False
        try:
            await self._run(insert, write=True)
            return True
        except _Duplicate:  # a concurrent create took the key meanwhile
            return False

    async def _update_one(self, write: Write) -> bool:
        key, data, ttl = write

        async def work(conn: AsyncConnection) -> bool:
            result = await conn.execute(self._sql_update, {"k": key, "d": data, "ms": ttl * 1000})
            return result.rowcount == 1

        return await self._run(work, write=True)

    async def _replace_one(self, swap: Swap) -> bool:
        key, expected, data, ttl = swap
        row = {"k": key, "e": expected, "d": data, "ms": ttl * 1000}
        statements = iter((self._sql_replace,))  # then the retry's form, for every retry

        async def work(conn: AsyncConnection) -> bool:
            statement = next(statements, self._sql_replace_again)
            result = await conn.execute(statement, row)
            return result.rowcount == 1

        return await self._run(work, write=True)

    async def _delete_expired(self, keys: list[str]) -> int:
        async def work(conn: AsyncConnection) -> int:
            result = await conn.execute(self._sql_delete_expired, {"keys": keys})
            return int(result.rowcount)

        return await self._run(work, write=True)

    async def _get_many(self, keys: list[str]) -> list[Any]:
        distinct = list(dict.fromkeys(keys))  # two requests of one session: asked once

        async def work(conn: AsyncConnection) -> dict[str, bytes]:
            result = await conn.execute(self._sql_get_many, {"keys": distinct})
            return {row[0]: row[1] for row in result}

        found = await self._run(work)
        return [found.get(key) for key in keys]

    async def _create_many(self, writes: list[Write]) -> list[Any]:
        # One multi-row INSERT. Fresh random keys never collide; if one does (or a key is
        # sent twice), the whole INSERT fails and _batch retries item by item, where each
        # create gets its own create-only answer.
        ordered = sorted(writes)
        if len({key for key, _, _ in ordered}) != len(ordered):
            raise _Duplicate
        now = self._now
        # One statement with one VALUES row per write, so all rows or none on every dialect:
        # a failed batch leaves nothing behind for the retry item by item to trip over.
        statement = sa.insert(self.table).values(
            [
                {"key": key, "data": data, "expires_at": now + ttl * 1000}
                for key, data, ttl in ordered
            ]
        )

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(statement)

        await self._run(work, write=True)
        return [True] * len(writes)

    async def _update_many(self, writes: list[Write]) -> list[Any]:
        # Two updates of one key (two concurrent requests of one session): the last one is
        # written and both report success, as if they had run one after the other.
        last = {write[0]: write for write in writes}
        done = await self._run(
            lambda conn: self._update_locked(conn, last), write=True, transaction=True
        )
        return [key in done for key, _, _ in writes]

    async def _replace_many(self, swaps: list[Swap]) -> list[Any]:
        writes = {key: (key, data, ttl) for key, _, data, ttl in swaps}
        expected = {key: {payload} for key, payload, _, _ in swaps}
        retry = {key: {payload, data} for key, payload, data, _ in swaps}  # see _sql_replace_again
        attempts = iter((expected,))

        async def work(conn: AsyncConnection) -> set[str]:
            return await self._update_locked(conn, writes, expected=next(attempts, retry))

        done = await self._run(work, write=True, transaction=True)
        return [key in done for key, _, _, _ in swaps]

    async def _update_locked(
        self,
        conn: AsyncConnection,
        last: dict[str, Write],
        *,
        expected: dict[str, set[bytes]] | None = None,
    ) -> set[str]:
        """Update several rows in two statements, in one transaction, whatever their number.

        Not every database has UPDATE ... RETURNING to say which rows an update found
        (MySQL has not). So the live rows are locked first, in key order, which keeps two
        batches in flight from deadlocking and a concurrent logout from deleting a row
        meanwhile (SQLite needs no row locks: ``BEGIN IMMEDIATE`` holds its write lock);
        then one UPDATE writes all of them, picking each row's values by key.

        With ``expected`` (a batch of compare-and-swaps) only the rows whose locked payload
        is exactly one of ``expected[key]`` are written: compared here, on the row as
        locked, which nobody can change before this transaction ends.
        """
        t = self.table.c
        now = self._now
        columns = (t.key,) if expected is None else (t.key, t.data)
        found = await conn.execute(
            sa.select(*columns)
            .where(t.key.in_(sorted(last)), t.expires_at > now)
            .order_by(t.key)
            .with_for_update()
        )
        if expected is None:
            live = [row[0] for row in found]
        else:
            live = [row[0] for row in found if bytes(row[1]) in expected[row[0]]]
        if live:
            await conn.execute(
                sa.update(self.table)
                .where(t.key.in_(live), t.expires_at > now)
                .values(
                    data=sa.case({k: last[k][1] for k in live}, value=t.key),
                    expires_at=now + sa.case({k: last[k][2] * 1000 for k in live}, value=t.key),
                )
            )
        return set(live)

    # -- maintenance

    async def purge_expired(self, batch_size: int = 1000) -> int:
        """Delete expired rows, ``batch_size`` per statement (short locks); return the count."""
        check_batch_size(batch_size)
        total = 0
        while True:

            async def expired(conn: AsyncConnection) -> list[str]:
                result = await conn.execute(self._sql_expired_keys, {"n": batch_size})
                return [row[0] for row in result]

            keys = await self._run(expired)
            if keys:
                # Deleted only if still expired: a create may have revived a key meanwhile.
                total += await self._delete_expired(keys)
            if len(keys) < batch_size:
                return total

    # -- running statements

    async def _run(
        self,
        work: Callable[[AsyncConnection], Awaitable[_T]],
        *,
        write: bool = False,
        transaction: bool = False,
    ) -> _T:
        """Run ``work`` on a pooled connection; a connection that had died gets one retry.

        After a server restart the pool may hand out a connection whose end it has not yet
        noticed; SQLAlchemy then invalidates it, and the retry gets a fresh one. Every
        statement here is safe to repeat. ``transaction`` groups the statements of
        ``work`` in one transaction (needed for a batch in autocommit mode).
        """
        engine = self._ready or await self._prepare()
        if write and self._write_lock is not None:
            async with self._write_lock:
                return await self._attempt(engine, work, transaction)
        return await self._attempt(engine, work, transaction)

    async def _attempt(
        self,
        engine: AsyncEngine,
        work: Callable[[AsyncConnection], Awaitable[_T]],
        transaction: bool,
    ) -> _T:
        dead_retried = False
        busy_waited = 0.0
        delay = 0.002
        conflicts = 0
        while True:
            try:
                return await self._on_connection(engine, work, transaction)
            except _Duplicate:
                raise
            except Exception as exc:
                if not dead_retried and _is_dead_connection(exc):
                    dead_retried = True
                    continue
                if _is_conflict(exc) and conflicts < _CONFLICT_RETRIES:
                    # The server chose this transaction as a deadlock victim (InnoDB's gap
                    # locks can order concurrent batches against each other) and rolled it
                    # back whole: the work is safe to repeat, as the server advises.
                    conflicts += 1
                    await asyncio.sleep(random.uniform(0, 0.005 * 2**conflicts))
                    continue
                if self._sqlite and _is_locked(exc) and busy_waited < _SQLITE_BUSY_TIMEOUT:
                    # Another process holds SQLite's lock. Nothing was done (a busy statement
                    # has no effect), so wait here, where cancelling is clean, and retry.
                    await asyncio.sleep(delay)
                    busy_waited += delay
                    delay = min(delay * 2, 0.05)
                    continue
                raise self._translate(exc) from exc

    async def _on_connection(
        self,
        engine: AsyncEngine,
        work: Callable[[AsyncConnection], Awaitable[_T]],
        transaction: bool,
    ) -> _T:
        if self._dialect not in _CANCELLABLE:
            async with engine.connect() as conn:
                return await self._work_on(conn, work, transaction)
        # A statement cut short by a cancelled caller (the session layer's time budget)
        # would be left running on the server: SQLAlchemy closes a connection interrupted
        # mid-statement, the server goes on waiting for its lock (a write could still
        # commit after its 503), and the pool opens another connection in its place, until
        # max_connections. So the statement runs in a task of its own, which the caller's
        # cancellation does not interrupt; instead the statement is cancelled on the server
        # (over another connection) and its connection stays checked out until the server
        # has answered. The caller does not wait for that.
        conn = await engine.connect()
        loop = asyncio.get_running_loop()
        running = loop.create_task(self._identified_work(conn, work, transaction))
        try:
            result = await asyncio.shield(running)
        except asyncio.CancelledError:
            # The connection is closed (back to the pool) only once the statement is over:
            # until then, no other statement can run on it and catch the cancel.
            self._abandoned.add(conn)
            self._keep_settling(self._cancel(conn, running))
            raise
        except BaseException:
            await conn.close()
            raise
        await conn.close()
        return result

    async def _identified_work(
        self,
        conn: AsyncConnection,
        work: Callable[[AsyncConnection], Awaitable[_T]],
        transaction: bool,
    ) -> _T:
        if self._dialect in _KILL_SQL and _SERVER_ID not in conn.info:
            # Once per connection: the id a KILL QUERY names.
            found = await conn.scalar(sa.text(_ID_SQL))
            conn.info[_SERVER_ID] = int(found or 0)
        return await self._work_on(conn, work, transaction)

    async def _cancel(self, conn: AsyncConnection, running: asyncio.Task[Any]) -> None:
        """Cancel the statement ``running`` waits on, then give its connection back (or drop
        it, when the server does not answer in time)."""
        kill = _KILL_SQL.get(self._dialect)
        try:
            async with asyncio.timeout(self._settle_budget()):
                if running.done():
                    pass
                elif kill is None:
                    # asyncpg sends its cancel request; SQLAlchemy then closes the connection
                    # once the server has confirmed it, and only then frees its pool slot.
                    running.cancel()
                elif server_id := conn.info.get(_SERVER_ID):
                    if self._canceller is None:
                        # Its own engine: the store's pool may be full of the very
                        # statements to cancel. One connection, which cancels queue for:
                        # the server never sees more than the pool and this one.
                        self._canceller = create_async_engine(
                            self.engine.url,
                            isolation_level="AUTOCOMMIT",
                            pool_size=1,
                            max_overflow=0,
                            pool_recycle=_POOL_RECYCLE,
                        )
                    async with self._canceller.connect() as side:
                        await side.exec_driver_sql(kill.format(int(server_id)))
                await asyncio.wait({running})
        except Exception as exc:  # the cancel itself failed: the server is unreachable
            log.debug("cancelling a timed-out statement on %s failed: %r", self._where, exc)
        finally:
            if not running.done():
                # No answer in time (a hung server): drop the connection.
                running.cancel()
                await asyncio.wait({running})
            if not running.cancelled():
                running.exception()  # the cancelled statement's error: expected, retrieved
            self._abandoned.discard(conn)
            with contextlib.suppress(Exception):
                await conn.close()

    async def _work_on(
        self,
        conn: AsyncConnection,
        work: Callable[[AsyncConnection], Awaitable[_T]],
        transaction: bool,
    ) -> _T:
        if not transaction or not self._autocommit:
            try:
                result = await work(conn)
            except sa.exc.IntegrityError as exc:
                raise _Duplicate from exc
            if not self._autocommit:
                if conn in self._abandoned:
                    await conn.rollback()
                    raise self._abandoned_error()
                await conn.commit()
            return result
        # Autocommit mode: SQLAlchemy sends no BEGIN, so we do. IMMEDIATE makes SQLite take
        # the write lock now, through its busy handler, instead of failing with "database is
        # locked" when a read turns into a write halfway through.
        begin = "BEGIN IMMEDIATE" if self._dialect == "sqlite" else "BEGIN"
        await conn.exec_driver_sql(begin)
        try:
            result = await work(conn)
        except Exception as exc:
            await conn.exec_driver_sql("ROLLBACK")
            if isinstance(exc, sa.exc.IntegrityError):
                raise _Duplicate from exc
            raise
        if conn in self._abandoned:
            # Its caller gave up while the last statement ran: what it wrote must not land.
            await conn.exec_driver_sql("ROLLBACK")
            raise self._abandoned_error()
        await conn.exec_driver_sql("COMMIT")
        return result

    def _abandoned_error(self) -> StoreUnavailable:
        return StoreUnavailable(f"{self._where}: rolled back a write whose caller gave up")

    async def _connect(self) -> AsyncEngine:
        """Check (or create) the table; the engine opens its pool on the way."""
        async with self.engine.connect() as conn:
            exists = await conn.run_sync(self._table_exists)
            if not exists:
                if not self._create_table:
                    raise self._missing_table()
                await self._run_ddl(conn)
            if not self._autocommit:
                await conn.commit()
        return self.engine

    def _table_exists(self, sync_conn: sa.Connection) -> bool:
        return bool(sa.inspect(sync_conn).has_table(self.table.name, schema=self.table.schema))

    async def _run_ddl(self, conn: AsyncConnection) -> None:
        # Several app instances starting at once may all find the table missing; one CREATE
        # wins and the others fail with "already exists" (or a unique violation in the
        # catalog). A failed CREATE is therefore checked again rather than reported.
        for attempt in range(3):
            try:
                await conn.run_sync(self.table.metadata.create_all, checkfirst=True)
                return
            except sa.exc.DBAPIError as exc:
                # SQLite says "already exists" with an OperationalError, so only a lost
                # connection is final here.
                if exc.connection_invalidated or attempt == 2:
                    raise
                if not self._autocommit:
                    await conn.rollback()
                await asyncio.sleep(0.05 * (attempt + 1))

    def _missing_table(self) -> StoreError:
        return StoreError(
            f"table {self.table.fullname} does not exist in {self._where}; create it in your "
            "migrations (sqlalchemy_store.define_table gives its definition) or pass "
            "create_table=True"
        )

    def _is_unavailable(self, exc: BaseException) -> bool:
        return _is_unavailable(exc)

    def _error_detail(self, exc: BaseException) -> str:
        # The DB-API's own error, without SQLAlchemy's statement and parameters.
        return str(getattr(exc, "orig", None) or exc)

    def _named_error(self, exc: BaseException) -> StoreError | None:
        return self._missing_table() if _is_missing_table(exc) else None


class _Duplicate(StoreError):
    """An INSERT met an existing key (internal: becomes ``create() -> False``)."""


# SQLite's "no such table" is an OperationalError like "database is locked"; MySQL and
# PostgreSQL name a missing table with a code.
_MISSING_TABLE_TEXT = ("no such table", "doesn't exist", "does not exist", "undefinedtable")
# What means "the database cannot be used right now" in SQLite's words.
_SQLITE_UNAVAILABLE_TEXT = ("database is locked", "unable to open", "disk i/o", "readonly")


def _is_missing_table(exc: BaseException) -> bool:
    text = f"{type(getattr(exc, 'orig', exc)).__name__} {getattr(exc, 'orig', exc)}".lower()
    return any(marker in text for marker in _MISSING_TABLE_TEXT)


#: How often a transaction that lost a deadlock is run again. (A lock wait that timed out
#: is not: the server gave up at the limit set from store_timeout; it is a 503.)
_CONFLICT_RETRIES = 5
#: MySQL/MariaDB: ER_LOCK_DEADLOCK. PostgreSQL: deadlock_detected, serialization_failure.
_CONFLICT_CODES = (1213,)
_CONFLICT_STATES = ("40P01", "40001")


def _is_conflict(exc: BaseException) -> bool:
    """The server rolled the transaction back to break a lock conflict: run it again."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and args[0] in _CONFLICT_CODES:
        return True
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state in _CONFLICT_STATES or "deadlock detected" in str(orig).lower()


def _is_locked(exc: BaseException) -> bool:
    """SQLite's SQLITE_BUSY: another connection holds the lock."""
    return isinstance(exc, sa.exc.OperationalError) and "database is locked" in str(exc.orig)


def _is_dead_connection(exc: BaseException) -> bool:
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


#: The server gave up on a statement (its time limit, a lock wait, our cancel): a 503, not
#: a bad query. PostgreSQL: query_canceled, lock_not_available; MySQL/MariaDB:
#: ER_LOCK_WAIT_TIMEOUT, ER_QUERY_INTERRUPTED, ER_STATEMENT_TIMEOUT (MariaDB),
#: ER_QUERY_TIMEOUT (MySQL).
_GAVE_UP_STATES = ("57014", "55P03")
_GAVE_UP_CODES = (1205, 1317, 1969, 3024)


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, TimeoutError, sa.exc.TimeoutError)):
        return True  # refused, reset, unreachable; the pool's checkout timeout
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _GAVE_UP_STATES:
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in _GAVE_UP_CODES:
        return True
    if exc.connection_invalidated or isinstance(exc, sa.exc.InterfaceError):
        return True
    if isinstance(exc, sa.exc.OperationalError):
        # OperationalError is the DB-API's class for "not the query's fault": connections
        # lost, access denied, lock timeouts. SQLite also uses it for a missing table.
        return not _is_missing_table(exc)
    return isinstance(exc.orig, (OSError, TimeoutError))
