"""PostgreSQL store on asyncpg: one row per session, expiry in an indexed column.

Rows are not removed by the server when they expire: every query filters on ``expires_at``
(server time, so client clock skew does not matter) and :meth:`PostgresStore.purge_expired`
deletes the leftovers in bounded batches. Run it periodically (a background task, cron).

Concurrent requests share round trips (see :mod:`aiohttp_sessionkit.batching`): the loads
issued in one event-loop iteration go as one ``SELECT ... WHERE key = ANY(...)``, the
updates as one ``UPDATE ... FROM unnest(...)``, the creates as one ``INSERT ... SELECT FROM
unnest(...)``, each on one pooled connection. Compare-and-swaps (merging saves) go like the
updates, with each row's payload compared in the statement. asyncpg spends far more CPU
per statement than PostgreSQL spends answering these, so this is where the time goes under
load.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from typing import Any, Protocol

try:
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'PostgresStore needs asyncpg: pip install "aiohttp-sessionkit[postgres]"'
    ) from exc

from ..exceptions import ConfigurationError, StoreError
from ._db import MAX_IDENTIFIER, DatabaseStore, Swap, Write, check_batch_size, identifier
from ._startup import open_or_defer

__all__ = ["PostgresStore"]

_INDEX_SUFFIX = "_expires_at_idx"
_POOL_MIN_SIZE = 1
_POOL_MAX_SIZE = 10

# Errors meaning "the server cannot be used right now", not "the query is wrong".
# OperatorInterventionError covers admin/crash shutdown, "the database system is starting up"
# (CannotConnectNowError) and statement_timeout cancellations; InterfaceError covers closed
# connections and closed pools (its ValueError subclasses are client-side bugs, see below).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError (refused, reset) and socket.gaierror
    TimeoutError,  # asyncio.TimeoutError is the same class on 3.11+
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,
    asyncpg.InvalidAuthorizationSpecificationError,  # includes InvalidPasswordError
    asyncpg.TooManyConnectionsError,
    asyncpg.LockNotAvailableError,  # lock_timeout: a lock held elsewhere, not a bad query
)
# A connection that died under us (server restart, admin shutdown); worth one retry.
# InternalClientError is what asyncpg raises when a pooled connection has read the server's
# shutdown message but not yet the end of the stream: a statement then fails before
# anything is sent ("cannot switch to state ...; another operation (2) is in progress").
_DEAD_CONNECTION: tuple[type[Exception], ...] = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.InternalClientError,
)
_DRIVER_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


class _Pool(Protocol):
    """The part of ``asyncpg.Pool`` this store uses, typed."""

    async def fetchval(self, query: str, *args: object) -> Any: ...

    async def execute(self, query: str, *args: object) -> str: ...

    async def close(self) -> None: ...

    def acquire(self) -> Any: ...

    async def release(
        self,
        connection: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - asyncpg's own signature
    ) -> None: ...


_identifier = functools.partial(
    identifier,
    store="PostgresStore",
    too_long=f"PostgreSQL's {MAX_IDENTIFIER}-byte limit for names",
)


def _quote(identifier: str) -> str:
    # Validated identifiers contain no '"', so quoting needs no escaping. Quoting keeps the
    # case as given and lets reserved words like "user" be used as table names.
    return f'"{identifier}"'


def _index_name(table: str) -> str:
    name = table + _INDEX_SUFFIX
    if len(name) <= MAX_IDENTIFIER:
        return name
    # Keep long table names from colliding after truncation: add a digest of the full name.
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    keep = MAX_IDENTIFIER - len(_INDEX_SUFFIX) - len(digest) - 1
    return f"{table[:keep]}_{digest}{_INDEX_SUFFIX}"


def _columns(writes: dict[str, Write]) -> tuple[list[str], list[bytes], list[int]]:
    """The keys, payloads and TTLs of distinct writes as three arrays, sorted by key.

    Key order makes every batch lock its rows in the same order, so two batches in flight
    at once wait for each other at worst, never deadlock.
    """
    ordered = [writes[key] for key in sorted(writes)]
    return [w[0] for w in ordered], [w[1] for w in ordered], [w[2] for w in ordered]


def _describe_dsn(dsn: str) -> str:
    """``host:port/db`` from a DSN, without user or password, for error messages."""
    # The last '@' ends the credentials, whatever characters the password contains.
    host_and_db = dsn.split("://", 1)[1].rsplit("@", 1)[-1]
    return host_and_db.split("?", 1)[0] or "localhost"


class PostgresStore(DatabaseStore[_Pool]):
    """Sessions in a PostgreSQL table, through an asyncpg pool it creates or borrows."""

    #: What asyncpg raises for a failed statement; anything else is a bug, left alone.
    _DRIVER_ERRORS = _DRIVER_ERRORS

    def __init__(
        self,
        dsn_or_pool: str | asyncpg.Pool,
        *,
        table: str = "aiohttp_sessions",
        schema: str | None = None,
        create_table: bool = True,
    ) -> None:
        if isinstance(dsn_or_pool, str):
            if not dsn_or_pool.startswith(("postgresql://", "postgres://")):
                raise ConfigurationError(
                    "PostgresStore needs a DSN starting with 'postgresql://' or "
                    f"'postgres://', or an asyncpg.Pool; got a string starting "
                    f"{dsn_or_pool.split(':', 1)[0]!r}"
                )
            self._dsn: str | None = dsn_or_pool
            self._pool: _Pool | None = None
            self._where = f"PostgreSQL at {_describe_dsn(dsn_or_pool)}"
        elif isinstance(dsn_or_pool, asyncpg.Pool):
            self._dsn = None
            self._pool = dsn_or_pool
            self._where = "PostgreSQL (application's pool)"
        else:
            raise ConfigurationError(
                "PostgresStore needs a DSN string ('postgresql://user@host/db') or an "
                f"asyncpg.Pool, got {type(dsn_or_pool).__name__}"
            )
        self._table_name = _identifier(table, "table")
        self._schema_name = None if schema is None else _identifier(schema, "schema")
        self._create_table = create_table

        qualified = _quote(self._table_name)
        index = _quote(_index_name(self._table_name))
        if self._schema_name is not None:
            qualified = f"{_quote(self._schema_name)}.{qualified}"
            qualified_index = f"{_quote(self._schema_name)}.{index}"
        else:
            qualified_index = index
        self._qualified = qualified
        self._qualified_index = qualified_index
        self._ddl = (
            f"CREATE TABLE IF NOT EXISTS {qualified} ("
            "key text PRIMARY KEY, "
            "data bytea NOT NULL, "
            "expires_at timestamptz NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {index} ON {qualified} (expires_at)",
        )
        # to_regclass resolves names exactly as the DDL above would (search_path when no
        # schema is given) and returns NULL instead of failing when a name is unknown.
        self._sql_exists = "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL"
        expires = "now() + make_interval(secs => $3)"
        # S608: the only interpolated text is the table name, validated and quoted above.
        self._sql_get = f"SELECT data FROM {qualified} WHERE key = $1 AND expires_at > now()"  # noqa: S608
        # A live row wins the conflict (nothing written, no row returned); an expired one is
        # replaced in place, so a stale leftover never blocks a fresh key.
        self._sql_create = (
            f"INSERT INTO {qualified} AS s (key, data, expires_at) VALUES ($1, $2, {expires}) "  # noqa: S608
            "ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, "
            "expires_at = EXCLUDED.expires_at WHERE s.expires_at <= now() "
            "RETURNING true"
        )
        self._sql_update = (
            f"UPDATE {qualified} SET data = $2, expires_at = {expires} "  # noqa: S608
            "WHERE key = $1 AND expires_at > now() RETURNING true"
        )
        # Compare-and-swap in the WHERE clause: a concurrent write of the row makes this
        # one wait for it and then test the row as it committed (READ COMMITTED re-checks
        # an updated row), so of two swaps from the same payload the second finds another.
        replace = (
            f"UPDATE {qualified} SET data = $3, "  # noqa: S608
            "expires_at = now() + make_interval(secs => $4) "
            "WHERE key = $1 AND {match} AND expires_at > now() RETURNING true"
        )
        self._sql_replace = replace.format(match="data = $2")
        # Sent again after a connection died mid-statement, the swap may find its own write,
        # committed before the answer was lost: holding the new payload counts as done.
        # (Without this the caller would merge its changes onto its own save: flash
        # messages it added would be added twice.)
        self._sql_replace_again = replace.format(match="(data = $2 OR data = $3)")
        self._sql_remove = f"DELETE FROM {qualified} WHERE key = $1"  # noqa: S608
        # The same three for a batch of distinct keys, as arrays: $1 the keys, $2 the payloads,
        # $3 the TTLs. Each returns the keys it found (read, created, updated).
        batch = "unnest($1::text[], $2::bytea[], $3::float8[]) AS u(key, data, ttl)"
        self._sql_get_many = (
            f"SELECT key, data FROM {qualified} "  # noqa: S608
            "WHERE key = ANY($1::text[]) AND expires_at > now()"
        )
        self._sql_create_many = (
            f"INSERT INTO {qualified} AS s (key, data, expires_at) "  # noqa: S608
            f"SELECT u.key, u.data, now() + make_interval(secs => u.ttl) FROM {batch} "
            "ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, "
            "expires_at = EXCLUDED.expires_at WHERE s.expires_at <= now() "
            "RETURNING s.key"
        )
        # One statement that updates several rows can deadlock with another one that locks
        # the same rows in another order (two requests of each of two sessions, in two
        # batches in flight at once), which the single-row UPDATE never could. So the rows
        # are locked first, in key order whatever the plan (LockRows sits above the Sort),
        # and only then updated; a row deleted, updated or expired in the meantime is
        # re-checked on its latest version by FOR UPDATE and left out if no longer live.
        self._sql_update_many = (
            f"UPDATE {qualified} AS s SET data = l.data, "  # noqa: S608
            "expires_at = now() + make_interval(secs => l.ttl) "
            f"FROM (SELECT r.key, u.data, u.ttl FROM {batch} JOIN {qualified} AS r "
            "ON r.key = u.key WHERE r.expires_at > now() ORDER BY r.key FOR UPDATE OF r) AS l "
            "WHERE s.key = l.key RETURNING s.key"
        )
        # The batched compare-and-swap locks like the batched update (key order, re-checked
        # on the latest row version), with the payload compared in the locking subquery.
        replace_many = (
            f"UPDATE {qualified} AS s SET data = l.data, "  # noqa: S608
            "expires_at = now() + make_interval(secs => l.ttl) "
            "FROM (SELECT r.key, u.data, u.ttl FROM unnest($1::text[], $2::bytea[], "
            f"$3::bytea[], $4::float8[]) AS u(key, expected, data, ttl) JOIN {qualified} AS r "
            "ON r.key = u.key WHERE r.expires_at > now() AND {match} "
            "ORDER BY r.key FOR UPDATE OF r) AS l "
            "WHERE s.key = l.key RETURNING s.key"
        )
        self._sql_replace_many = replace_many.format(match="r.data = u.expected")
        self._sql_replace_many_again = replace_many.format(
            match="(r.data = u.expected OR r.data = u.data)"
        )
        # SKIP LOCKED lets two purging app instances split the work instead of queueing; the
        # outer expires_at test is re-evaluated on the latest row version, so a row that a
        # concurrent create revived after the subquery's snapshot is not deleted.
        self._sql_purge = (
            f"WITH gone AS (DELETE FROM {qualified} WHERE key IN ("  # noqa: S608
            f"SELECT key FROM {qualified} WHERE expires_at <= now() "
            "LIMIT $1 FOR UPDATE SKIP LOCKED) "
            "AND expires_at <= now() RETURNING 1) "
            "SELECT count(*) FROM gone"
        )

        # A pool this store creates gets statement_timeout and lock_timeout as connection
        # settings (no extra round trip), set when the pool is created (on open() or first
        # use). A borrowed pool keeps its own: give it server_settings yourself.
        super().__init__(server_limits=self._dsn is not None)

    def __repr__(self) -> str:
        return f"<PostgresStore {self._qualified} on {self._where}>"

    @property
    def ddl(self) -> tuple[str, ...]:
        """The statements that create the table and its index; run them yourself when
        ``create_table=False``."""
        return self._ddl

    async def open(self) -> None:
        """Create the pool (for a DSN) and, with ``create_table``, the table and index.

        A server that cannot be reached does not fail startup: it is logged once and the
        pool and table are set up on first use, once the server is back (requests that
        need a session get 503 meanwhile). A missing table without ``create_table`` still
        raises :class:`~aiohttp_sessionkit.StoreError`.
        """
        await open_or_defer(self, self._prepare)

    async def _dispose(self) -> None:
        if self._dsn is None or self._pool is None:
            return  # the application's pool stays open
        pool, self._pool = self._pool, None
        await pool.close()  # terminates the connections itself if closing fails

    async def remove(self, key: str) -> None:
        # Not batched: logouts are rare, and a DELETE of one row holds one lock.
        await self._query("execute", self._sql_remove, key)

    # The statements of one record, and of a batch of them (see DatabaseStore).

    async def _get_one(self, key: str) -> bytes | None:
        data: bytes | None = await self._query("fetchval", self._sql_get, key)
        return data

    async def _create_one(self, write: Write) -> bool:
        return await self._query("fetchval", self._sql_create, *write) is not None

    async def _update_one(self, write: Write) -> bool:
        return await self._query("fetchval", self._sql_update, *write) is not None

    async def _replace_one(self, swap: Swap) -> bool:
        found = await self._query(
            "fetchval", self._sql_replace, *swap, again=self._sql_replace_again
        )
        return found is not None

    async def _get_many(self, keys: list[str]) -> list[Any]:
        # A key asked twice (two requests of one session) is sent once; both get the row.
        rows = await self._query("fetch", self._sql_get_many, list(dict.fromkeys(keys)))
        found = {row[0]: row[1] for row in rows}
        return [found.get(key) for key in keys]

    async def _create_many(self, writes: list[Write]) -> list[Any]:
        # ON CONFLICT DO UPDATE refuses to touch one row twice in a statement, so a key sent
        # twice is written once: its first create may succeed, the next ones find it live
        # and fail, as they would one after the other. (Fresh random keys never repeat.)
        first: dict[str, Write] = {}
        for write in writes:
            first.setdefault(write[0], write)
        rows = await self._query("fetch", self._sql_create_many, *_columns(first))
        created = {row[0] for row in rows}
        results: list[Any] = []
        for key, _, _ in writes:
            results.append(key in created)
            created.discard(key)
        return results

    async def _update_many(self, writes: list[Write]) -> list[Any]:
        # Two updates of one key (two concurrent requests of one session): the last one is
        # written, and both report success, as if they had run one after the other.
        last = {write[0]: write for write in writes}
        if len(last) == 1:
            updated = await self._update_one(writes[-1])
            return [updated] * len(writes)
        rows = await self._query("fetch", self._sql_update_many, *_columns(last))
        done = {row[0] for row in rows}
        return [key in done for key, _, _ in writes]

    async def _replace_many(self, swaps: list[Swap]) -> list[Any]:
        # Key order, as for updates: two batches in flight lock their rows in one order.
        ordered = sorted(swaps)
        columns = tuple(list(column) for column in zip(*ordered, strict=True))
        rows = await self._query(
            "fetch", self._sql_replace_many, *columns, again=self._sql_replace_many_again
        )
        done = {row[0] for row in rows}
        return [key in done for key, _, _, _ in swaps]

    async def purge_expired(self, batch_size: int = 1000) -> int:
        """Delete expired rows, ``batch_size`` per statement (short locks); return the count."""
        check_batch_size(batch_size)
        total = 0
        while True:
            deleted: int = await self._query("fetchval", self._sql_purge, batch_size)
            total += deleted
            if deleted < batch_size:
                return total

    async def _query(self, method: str, sql: str, *args: object, again: str | None = None) -> Any:
        """Run one statement; a connection that had died under us gets one retry.

        After a server restart the pool may hand out a connection whose end it has not yet
        noticed (the event loop was busy); the pool replaces it, so one retry succeeds.
        Every statement here is safe to repeat; ``again``, when given, is the form to
        repeat it in (a compare-and-swap that accepts its own earlier write).
        """
        pool = self._ready
        if pool is None:
            pool = await self._prepare()
        try:
            return await self._on_connection(pool, method, sql, args)
        except _DRIVER_ERRORS as exc:
            if not isinstance(exc, _DEAD_CONNECTION):
                raise self._translate(exc) from exc
        try:
            return await self._on_connection(pool, method, again or sql, args)
        except _DRIVER_ERRORS as exc:
            raise self._translate(exc) from exc

    async def _on_connection(
        self, pool: _Pool, method: str, sql: str, args: tuple[object, ...]
    ) -> Any:
        connection = await pool.acquire()
        try:
            result = await getattr(connection, method)(sql, *args)
        except BaseException:
            # A statement cut short (the session layer's time budget, a cancelled request)
            # is still running on the server: asyncpg has sent a cancel request for it.
            # Dropping the connection now would abandon that cancel, and leave the server
            # running the statement (a write could still commit after its 503) while the
            # pool opens another connection in its place: under a held lock, they pile up
            # until max_connections. So the connection keeps its pool slot until the server
            # confirms the cancel, and is dropped only if it never does (a hung server);
            # the caller does not wait for that.
            self._settle(pool, connection)
            raise
        await pool.release(connection)
        return result

    def _settle(self, pool: _Pool, connection: Any) -> None:
        self._keep_settling(self._release_within(pool, connection, self._settle_budget()))

    @staticmethod
    async def _release_within(pool: _Pool, connection: Any, budget: float) -> None:
        # pool.release waits for the cancel to be confirmed, then resets the connection;
        # past the budget, or on any error, it terminates the connection instead.
        try:
            await pool.release(connection, timeout=budget)
        except (Exception, asyncio.CancelledError):  # noqa: S110 - terminated: nothing to do
            pass

    async def _connect(self) -> _Pool:
        """Create the pool (for a DSN) and check (or create) the table."""
        pool = self._pool
        if pool is None:
            limit = self._server_limit()
            settings = None
            if limit is not None:
                ms = str(max(1, int(limit * 1000)))
                settings = {"statement_timeout": ms, "lock_timeout": ms}
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=_POOL_MIN_SIZE,
                max_size=_POOL_MAX_SIZE,
                server_settings=settings,
            )
            self._pool = pool
        # Without create_table only the table is required: its index may be named
        # differently by whoever created it.
        index = self._qualified_index if self._create_table else self._qualified
        if not await pool.fetchval(self._sql_exists, self._qualified, index):
            if not self._create_table:
                raise self._missing_table()
            await self._run_ddl(pool)
        return pool

    async def _run_ddl(self, pool: _Pool) -> None:
        # CREATE ... IF NOT EXISTS is not safe against a concurrent identical CREATE (both
        # pass the check, one fails on a unique index of the catalog), so app instances
        # starting together serialize on an advisory lock named after the table.
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                f"aiohttp_sessionkit:{self._qualified}",
            )
            for statement in self._ddl:
                await connection.execute(statement)

    def _missing_table(self) -> StoreError:
        return StoreError(
            f"table {self._qualified} does not exist in {self._where}; create it with the "
            "statements in PostgresStore.ddl, or pass create_table=True"
        )

    def _is_unavailable(self, exc: BaseException) -> bool:
        # ValueError subclasses of InterfaceError (DataError, ClientConfigurationError) are
        # mistakes on the client side, not an unreachable server.
        return isinstance(exc, _UNAVAILABLE) and not isinstance(exc, ValueError)

    def _named_error(self, exc: BaseException) -> StoreError | None:
        if isinstance(exc, asyncpg.UndefinedTableError):
            return self._missing_table()
        if isinstance(exc, asyncpg.InvalidSchemaNameError):
            return StoreError(
                f"schema {_quote(self._schema_name or '')} does not exist in {self._where}; "
                "create it first (PostgresStore creates tables, not schemas)"
            )
        return None
