"""One benchmark server: ``python benchmarks/app.py CONFIG PORT``.

Serves the same four routes in every configuration, on 127.0.0.1:PORT, in this one process:

* ``/login``: stores ~100 bytes of JSON in a new session (run once, before measuring);
* ``/untouched``: never touches the session;
* ``/read``: reads one key of the session (403 when there is no session, so a broken cookie
  shows up as errors instead of a fast empty-session figure);
* ``/write``: increments a counter in the session on every request.

Backing-server addresses come from the environment (see benchcommon.ENV_*).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import benchcommon as bc
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_LOGINS = iter(range(1, 1 << 62))


def _no_session() -> web.Response:
    return web.Response(status=403, text="no session")


async def untouched(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _app(login: Handler, read: Handler, write: Handler) -> web.Application:
    app = web.Application()
    app.router.add_get("/login", login)
    app.router.add_get("/untouched", untouched)
    app.router.add_get("/read", read)
    app.router.add_get("/write", write)
    return app


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"app.py: {name} is not set (run.py sets it)")
    return value


def _set_id_cookie(response: web.Response, value: str) -> None:
    response.set_cookie(bc.COOKIE_NAME, value, httponly=True, samesite="Lax", path="/")


# --------------------------------------------------------------------------- bare


def bare_app() -> web.Application:
    counter = [0]
    name = bc.session_data(1)["name"]

    async def login(request: web.Request) -> web.Response:
        response = web.Response(text="ok")
        _set_id_cookie(response, secrets.token_urlsafe(32))
        return response

    async def read(request: web.Request) -> web.Response:
        return web.Response(text=name)

    async def write(request: web.Request) -> web.Response:
        counter[0] += 1
        return web.Response(text=str(counter[0]))

    return _app(login, read, write)


# --------------------------------------------------------------------------- limits
#
# The least a session layer can do in aiohttp, as configurations of their own (issue 15).
# Each is written the cheapest way we know: one middleware, no expiry, no Vary, no prepare
# hook, no error handling. Handlers read the session from a two-item list on the request:
# [data or None, changed].

_BOX = web.RequestKey("bench.box", list)


def untouched_limit_app() -> web.Application:
    """bare, plus one no-op middleware and one no-op on_response_prepare handler."""
    app = bare_app()

    @web.middleware
    async def noop(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request)

    async def noop_prepare(request: web.Request, response: web.StreamResponse) -> None:
        return None

    app.middlewares.append(noop)
    app.on_response_prepare.append(noop_prepare)
    return app


def _cookie_value(request: web.Request) -> str | None:
    """The session cookie's value by a plain string search of the one Cookie header."""
    raw = request.headers.get("Cookie")
    if raw is None:
        return None
    start = raw.find(_COOKIE_PREFIX)
    if start < 0:
        return None
    start += len(_COOKIE_PREFIX)
    end = raw.find(";", start)
    return raw[start:] if end < 0 else raw[start:end]


_COOKIE_PREFIX = bc.COOKIE_NAME + "="
_SET_COOKIE_ATTRS = "; Path=/; HttpOnly; SameSite=Lax"


async def _noop_prepare(request: web.Request, response: web.StreamResponse) -> None:
    return None


def _limit_app(
    middleware: Callable[..., Awaitable[web.StreamResponse]], *, adjusted: bool
) -> web.Application:
    """The login/read/write routes over ``middleware``.

    ``adjusted`` adds what a correct session library cannot leave out in aiohttp 3.14 (the
    middleware then adds ``Vary``/``Cache-Control`` itself): a no-op ``on_response_prepare``
    handler, because a session changed by a handler that streams its response can only be
    saved from that signal.
    """

    async def login(request: web.Request) -> web.Response:
        request[_BOX][:] = [bc.session_data(next(_LOGINS)), True]
        return web.Response(text="ok")

    async def read(request: web.Request) -> web.Response:
        data = request[_BOX][0]
        if data is None:
            return _no_session()
        return web.Response(text=data["name"])

    async def write(request: web.Request) -> web.Response:
        box = request[_BOX]
        data = box[0]
        if data is None or "user_id" not in data:
            return _no_session()
        n = data.get("n", 0) + 1
        data["n"] = n
        box[1] = True
        return web.Response(text=str(n))

    app = _app(login, read, write)
    app.middlewares.append(web.middleware(middleware))
    if adjusted:
        app.on_response_prepare.append(_noop_prepare)
    return app


def cookie_limit_app(*, adjusted: bool = False) -> web.Application:
    """AES-256-GCM cookie: open + JSON decode when a cookie comes, encode + seal on change."""
    import binascii

    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = _env(bc.ENV_COOKIE_KEY)
    aes = AESGCM(binascii.a2b_base64((key + "=" * (-len(key) % 4)).translate(_FROM_URLSAFE)))
    loads, dumps = json.loads, json.JSONEncoder(separators=(",", ":")).encode
    urandom = os.urandom

    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        data = None
        value = _cookie_value(request)
        if value:
            try:
                padded = value + "=" * (-len(value) % 4)
                raw = binascii.a2b_base64(padded.translate(_FROM_URLSAFE))
                data = loads(aes.decrypt(raw[:12], raw[12:], None))
            except (binascii.Error, ValueError, InvalidTag):
                data = None
        box = request[_BOX] = [data, False]
        response = await handler(request)
        if box[1]:
            nonce = urandom(12)
            sealed = binascii.b2a_base64(
                nonce + aes.encrypt(nonce, dumps(box[0]).encode(), None), newline=False
            )
            token = sealed.decode().translate(_TO_URLSAFE).rstrip("=")
            response.headers.add("Set-Cookie", _COOKIE_PREFIX + token + _SET_COOKIE_ATTRS)
            if adjusted:  # a response that hands out a session must not be cached shared
                response.headers["Cache-Control"] = "private"
        if adjusted and (data is not None or box[1]):
            response.headers["Vary"] = "Cookie"  # the answer depends on the cookie
        return response

    return _limit_app(middleware, adjusted=adjusted)


_FROM_URLSAFE = str.maketrans("-_", "+/")
_TO_URLSAFE = str.maketrans("+/", "-_")


def jwt_limit_app(*, adjusted: bool = False) -> web.Application:
    """HS256 JWT: split, HMAC check, JSON decode, exp check on a read; JSON encode with a new
    exp, HMAC sign, Set-Cookie on a change. No kid, iat, jti or private claim; no cache."""
    import binascii
    import hmac
    import time

    secret = _env(bc.ENV_JWT_SECRET).encode()
    loads, dumps = json.loads, json.JSONEncoder(separators=(",", ":")).encode
    digest, same = hmac.digest, hmac.compare_digest
    clock = time.time

    def b64(raw: bytes) -> str:
        return binascii.b2a_base64(raw, newline=False).decode().translate(_TO_URLSAFE).rstrip("=")

    def unb64(text: str) -> bytes:
        return binascii.a2b_base64((text + "=" * (-len(text) % 4)).translate(_FROM_URLSAFE))

    header = b64(b'{"alg":"HS256","typ":"JWT"}')

    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        data = None
        token = _cookie_value(request)
        if token:
            try:
                head, body, signature = token.split(".")
                signed = digest(secret, f"{head}.{body}".encode(), "sha256")
                if head == header and same(signed, unb64(signature)):
                    claims = loads(unb64(body))
                    if claims["exp"] > clock():
                        data = claims
            except (ValueError, KeyError, binascii.Error):
                data = None
        box = request[_BOX] = [data, False]
        response = await handler(request)
        if box[1]:
            claims = box[0]
            claims["exp"] = int(clock()) + bc.FLOOR_TTL
            signing_input = f"{header}.{b64(dumps(claims).encode())}"
            signature = b64(digest(secret, signing_input.encode(), "sha256"))
            response.headers.add(
                "Set-Cookie", f"{_COOKIE_PREFIX}{signing_input}.{signature}{_SET_COOKIE_ATTRS}"
            )
            if adjusted:
                response.headers["Cache-Control"] = "private"
        if adjusted and (data is not None or box[1]):
            response.headers["Vary"] = "Cookie"
        return response

    return _limit_app(middleware, adjusted=adjusted)


def memory_limit_app(*, adjusted: bool = False) -> web.Application:
    """A dict of JSON bytes by cookie value: lookup + decode; encode + store on change."""
    records: dict[str, bytes] = {}
    loads, dumps = json.loads, json.JSONEncoder(separators=(",", ":")).encode

    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        data = None
        sid = _cookie_value(request)
        if sid:
            stored = records.get(sid)
            if stored is not None:
                data = loads(stored)
        box = request[_BOX] = [data, False]
        response = await handler(request)
        if box[1]:
            if sid is None or data is None:  # a new session: a new id and a cookie
                sid = secrets.token_urlsafe(32)
                response.headers.add("Set-Cookie", _COOKIE_PREFIX + sid + _SET_COOKIE_ATTRS)
                if adjusted:
                    response.headers["Cache-Control"] = "private"
            records[sid] = dumps(box[0]).encode()
        if adjusted and (data is not None or box[1]):
            response.headers["Vary"] = "Cookie"
        return response

    return _limit_app(middleware, adjusted=adjusted)


# --------------------------------------------------------------------------- ours


def ours_app(config: str) -> web.Application:
    bc.use_working_tree()
    from aiohttp_sessionkit import (
        AbstractStore,
        AbstractTransport,
        CookieTransport,
        EncryptedCookieStore,
        HeaderTransport,
        MemoryStore,
        get_session,
    )
    from aiohttp_sessionkit import setup as sessionkit_setup

    transport: AbstractTransport = CookieTransport()
    options: dict[str, Any] = {}
    if config == "cookie-legacy":
        from cryptography.fernet import Fernet

        from aiohttp_sessionkit.legacy import AiohttpSessionCookie

        options["legacy"] = AiohttpSessionCookie(Fernet.generate_key().decode())
        config = "cookie"
    if config == "memory-users":
        options["user_key"] = "user_id"
        config = "memory"
    if bc.CONFIG_BY_NAME[config].transport == "header":
        transport = HeaderTransport(response_header=bc.TOKEN_RESPONSE_HEADER)
        config = config.removesuffix("-header")

    async def login(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.update(bc.session_data(next(_LOGINS)))
        return web.Response(text="ok")

    async def read(request: web.Request) -> web.Response:
        session = await get_session(request)
        name = session.get("name")
        if name is None:
            return _no_session()
        return web.Response(text=name)

    async def write(request: web.Request) -> web.Response:
        session = await get_session(request)
        if "user_id" not in session:
            return _no_session()
        n = session.get("n", 0) + 1
        session["n"] = n
        return web.Response(text=str(n))

    app = _app(login, read, write)
    store: AbstractStore
    if config == "memory":
        store = MemoryStore()
    elif config == "cookie":
        store = EncryptedCookieStore(_env(bc.ENV_COOKIE_KEY))
    elif config == "jwt":
        from aiohttp_sessionkit import JWTStore

        store = JWTStore(_env(bc.ENV_JWT_SECRET))
    elif config == "sql-sqlite":
        from aiohttp_sessionkit.stores.sql import SQLAlchemyStore

        store = SQLAlchemyStore(_sqlite_url("ours"), table="bench_ours")
    elif config == "sql-mariadb":
        from aiohttp_sessionkit.stores.sql import SQLAlchemyStore

        store = SQLAlchemyStore(_env(bc.ENV_MYSQL_URL), table=f"bench_ours_{os.getpid()}")
    elif config == "redis":
        from aiohttp_sessionkit.stores.redis import RedisStore

        store = RedisStore(_env(bc.ENV_REDIS_URL), key_prefix="bench:ours:")
    elif config == "memcached":
        from aiohttp_sessionkit.stores.memcached import MemcachedStore

        store = MemcachedStore(_env(bc.ENV_MEMCACHED_URL), key_prefix="bench:ours:")
    elif config == "postgres":
        from aiohttp_sessionkit.stores.postgres import PostgresStore

        dsn = _env(bc.ENV_POSTGRES_DSN)
        app.cleanup_ctx.append(_postgres_reset(dsn, "bench_ours"))  # before the store opens
        store = PostgresStore(dsn, table="bench_ours")
    elif config == "mongo":
        from aiohttp_sessionkit.stores.mongo import MongoStore

        url = _env(bc.ENV_MONGO_URL)
        app.cleanup_ctx.append(_mongo_reset(url, "ours"))
        store = MongoStore(url, database="sessionkit_bench", collection="ours")
    else:
        raise SystemExit(f"app.py: unknown configuration {config!r}")
    sessionkit_setup(app, store, cookie_name=bc.COOKIE_NAME, transport=transport, **options)
    return app


# --------------------------------------------------------------------------- aiohttp-session


def aiohttp_session_app(config: str) -> web.Application:
    # aiohttp-session keys the request with plain strings, which aiohttp 3.14 answers with a
    # NotAppKeyWarning on every request; printing those would distort its figure.
    warnings.filterwarnings("ignore", category=web.NotAppKeyWarning)
    import aiohttp_session
    from aiohttp_session.cookie_storage import EncryptedCookieStorage

    async def login(request: web.Request) -> web.Response:
        session = await aiohttp_session.new_session(request)
        session.update(bc.session_data(next(_LOGINS)))
        return web.Response(text="ok")

    async def read(request: web.Request) -> web.Response:
        session = await aiohttp_session.get_session(request)
        name = session.get("name")
        if name is None:
            return _no_session()
        return web.Response(text=name)

    async def write(request: web.Request) -> web.Response:
        session = await aiohttp_session.get_session(request)
        if "user_id" not in session:
            return _no_session()
        n = session.get("n", 0) + 1
        session["n"] = n
        return web.Response(text=str(n))

    app = _app(login, read, write)
    if config == "aiohttp-session-cookie":
        from cryptography.fernet import Fernet

        storage: Any = EncryptedCookieStorage(Fernet.generate_key().decode())
    elif config == "aiohttp-session-redis":
        import redis.asyncio as aioredis
        from aiohttp_session.redis_storage import RedisStorage

        client = aioredis.Redis.from_url(_env(bc.ENV_REDIS_URL))
        storage = RedisStorage(client)

        async def close_client(app: web.Application) -> None:
            await client.aclose()

        app.on_cleanup.append(close_client)
    else:
        raise SystemExit(f"app.py: unknown configuration {config!r}")
    aiohttp_session.setup(app, storage)
    return app


# --------------------------------------------------------------------------- floors


def _cookie_id(request: web.Request) -> str | None:
    return request.cookies.get(bc.COOKIE_NAME) or None


def _floor_app(
    create: Callable[[str, bytes], Awaitable[object]],
    fetch: Callable[[str], Awaitable[bytes | None]],
    update: Callable[[str, bytes], Awaitable[object]],
) -> web.Application:
    """Login, read and write routes over three raw driver calls, as a handler would write them.

    ``create(id, data)`` stores a new session, ``fetch(id)`` returns its JSON or None,
    ``update(id, data)`` replaces it; each also sets or refreshes the expiry.
    """

    async def login(request: web.Request) -> web.Response:
        sid = secrets.token_urlsafe(32)
        await create(sid, bc.compact_json(bc.session_data(next(_LOGINS))))
        response = web.Response(text="ok")
        _set_id_cookie(response, sid)
        return response

    async def load(request: web.Request) -> tuple[str, dict[str, Any]] | None:
        sid = _cookie_id(request)
        if sid is None:
            return None
        raw = await fetch(sid)
        return None if raw is None else (sid, json.loads(raw))

    async def read(request: web.Request) -> web.Response:
        found = await load(request)
        if found is None:
            return _no_session()
        return web.Response(text=found[1]["name"])

    async def write(request: web.Request) -> web.Response:
        found = await load(request)
        if found is None:
            return _no_session()
        sid, data = found
        n = data.get("n", 0) + 1
        data["n"] = n
        await update(sid, bc.compact_json(data))
        return web.Response(text=str(n))

    return _app(login, read, write)


def jwt_floor_app() -> web.Application:
    """The session as JWT claims, with PyJWT called in the handlers and nothing else."""
    import time

    import jwt

    secret = _env(bc.ENV_JWT_SECRET)
    encode, decode = jwt.encode, jwt.decode
    algorithms = ["HS256"]

    def claims_of(request: web.Request) -> dict[str, Any] | None:
        token = _cookie_value(request)
        if not token:
            return None
        try:
            claims: dict[str, Any] = decode(token, secret, algorithms=algorithms)
        except jwt.InvalidTokenError:
            return None
        return claims

    def with_token(response: web.Response, claims: dict[str, Any]) -> web.Response:
        claims["exp"] = int(time.time()) + bc.FLOOR_TTL
        token = encode(claims, secret, algorithm="HS256")
        response.headers.add("Set-Cookie", _COOKIE_PREFIX + token + _SET_COOKIE_ATTRS)
        return response

    async def login(request: web.Request) -> web.Response:
        return with_token(web.Response(text="ok"), bc.session_data(next(_LOGINS)))

    async def read(request: web.Request) -> web.Response:
        claims = claims_of(request)
        if claims is None:
            return _no_session()
        return web.Response(text=claims["name"])

    async def write(request: web.Request) -> web.Response:
        claims = claims_of(request)
        if claims is None or "user_id" not in claims:
            return _no_session()
        n = claims.get("n", 0) + 1
        claims["n"] = n
        return with_token(web.Response(text=str(n)), claims)

    return _app(login, read, write)


def _sqlite_url(name: str) -> str:
    """A fresh SQLite file for this server process (the last round's is removed)."""
    path = os.path.join(_env(bc.ENV_SQLITE_DIR), f"{name}-{os.getpid()}.db")
    return f"sqlite+aiosqlite:///{path}"


def sql_sqlite_floor_app() -> web.Application:
    """The same table shape as SQLAlchemyStore, with the Core calls a handler would make."""
    return _sql_floor_app(_sqlite_url("floor"), "bench_floor")


def sql_mariadb_floor_app() -> web.Application:
    """The SQLite floor's calls on MariaDB (asyncmy), with a pool like the store's."""
    return _sql_floor_app(_env(bc.ENV_MYSQL_URL), f"bench_floor_{os.getpid()}")


def _sql_floor_app(url: str, name: str) -> web.Application:
    import time

    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

    metadata = sa.MetaData()
    table = sa.Table(
        name,
        metadata,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False, index=True),
    )
    engines: list[AsyncEngine] = []

    def expires_ms() -> int:
        return int((time.time() + bc.FLOOR_TTL) * 1000)

    async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
        engine = create_async_engine(url)
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        engines.append(engine)
        yield
        await engine.dispose()

    async def create(sid: str, data: bytes) -> object:
        async with engines[0].begin() as connection:
            return await connection.execute(
                table.insert().values(key=sid, data=data, expires_at=expires_ms())
            )

    async def fetch(sid: str) -> bytes | None:
        now_ms = int(time.time() * 1000)
        query = sa.select(table.c.data).where(table.c.key == sid, table.c.expires_at > now_ms)
        async with engines[0].connect() as connection:
            raw: bytes | None = (await connection.execute(query)).scalar()
        return raw

    async def update(sid: str, data: bytes) -> object:
        statement = (
            table.update().where(table.c.key == sid).values(data=data, expires_at=expires_ms())
        )
        async with engines[0].begin() as connection:
            return await connection.execute(statement)

    app = _floor_app(create, fetch, update)
    app.cleanup_ctx.append(engine_ctx)
    return app


def redis_floor_app() -> web.Application:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(_env(bc.ENV_REDIS_URL))
    prefix = "bench:floor:"

    async def create(sid: str, data: bytes) -> object:
        return await client.set(prefix + sid, data, ex=bc.FLOOR_TTL)

    async def fetch(sid: str) -> bytes | None:
        raw = await client.get(prefix + sid)
        return raw if raw is None or isinstance(raw, bytes) else raw.encode()

    async def close_client(app: web.Application) -> None:
        await client.aclose()

    app = _floor_app(create, fetch, create)  # SET ... EX both creates and replaces
    app.on_cleanup.append(close_client)
    return app


def memcached_floor_app() -> web.Application:
    from urllib.parse import urlsplit

    import aiomcache

    url = urlsplit(_env(bc.ENV_MEMCACHED_URL))
    # The pool MemcachedStore gives the clients it creates; aiomcache's default is 2.
    client = aiomcache.Client(url.hostname or "127.0.0.1", url.port or 11211, pool_size=8)
    prefix = b"bench:floor:"

    async def create(sid: str, data: bytes) -> object:
        return await client.set(prefix + sid.encode(), data, exptime=bc.FLOOR_TTL)

    async def fetch(sid: str) -> bytes | None:
        return await client.get(prefix + sid.encode())

    async def close_client(app: web.Application) -> None:
        await client.close()

    app = _floor_app(create, fetch, create)  # set both creates and replaces
    app.on_cleanup.append(close_client)
    return app


def _postgres_reset(dsn: str, table: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """Drop ``table`` on startup, so every run starts without rows or bloat from the last."""

    async def reset(app: web.Application) -> AsyncIterator[None]:
        import asyncpg  # type: ignore[import-untyped]

        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            await connection.close()
        yield

    return reset


def _mongo_reset(url: str, collection: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def reset(app: web.Application) -> AsyncIterator[None]:
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
        try:
            await client["sessionkit_bench"].drop_collection(collection)
        finally:
            await client.close()
        yield

    return reset


def postgres_floor_app() -> web.Application:
    import asyncpg

    dsn = _env(bc.ENV_POSTGRES_DSN)
    table = "bench_floor"
    pool_holder: list[Any] = []
    # The same table shape and pool size as PostgresStore: a session table needs the expiry
    # column and an index to purge by it.
    ddl = (
        f"CREATE TABLE {table} (key text PRIMARY KEY, data bytea NOT NULL, "
        "expires_at timestamptz NOT NULL)",
        f"CREATE INDEX {table}_expires_idx ON {table} (expires_at)",
    )
    sql_insert = (
        f"INSERT INTO {table} (key, data, expires_at) "  # noqa: S608 - constant table name
        "VALUES ($1, $2, now() + make_interval(secs => $3))"
    )
    sql_select = f"SELECT data FROM {table} WHERE key = $1"  # noqa: S608
    sql_update = (
        f"UPDATE {table} SET data = $2, "  # noqa: S608
        "expires_at = now() + make_interval(secs => $3) WHERE key = $1"
    )

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        async with pool.acquire() as connection:
            for statement in ddl:
                await connection.execute(statement)
        pool_holder.append(pool)
        yield
        await pool.close()

    async def create(sid: str, data: bytes) -> object:
        return await pool_holder[0].execute(sql_insert, sid, data, bc.FLOOR_TTL)

    async def fetch(sid: str) -> bytes | None:
        raw: bytes | None = await pool_holder[0].fetchval(sql_select, sid)
        return raw

    async def update(sid: str, data: bytes) -> object:
        return await pool_holder[0].execute(sql_update, sid, data, bc.FLOOR_TTL)

    app = _floor_app(create, fetch, update)
    app.cleanup_ctx.append(_postgres_reset(dsn, table))
    app.cleanup_ctx.append(pool_ctx)
    return app


def mongo_floor_app() -> web.Application:
    from pymongo import AsyncMongoClient

    url = _env(bc.ENV_MONGO_URL)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    collection = client["sessionkit_bench"]["floor"]

    def expires() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=bc.FLOOR_TTL)

    async def create(sid: str, data: bytes) -> object:
        return await collection.insert_one({"_id": sid, "data": data, "expires": expires()})

    async def fetch(sid: str) -> bytes | None:
        doc = await collection.find_one({"_id": sid})
        return None if doc is None else bytes(doc["data"])

    async def update(sid: str, data: bytes) -> object:
        return await collection.update_one(
            {"_id": sid}, {"$set": {"data": data, "expires": expires()}}
        )

    async def close_client(app: web.Application) -> None:
        await client.close()

    app = _floor_app(create, fetch, update)
    app.cleanup_ctx.append(_mongo_reset(url, "floor"))
    app.on_cleanup.append(close_client)
    return app


# --------------------------------------------------------------------------- main


def build_app(config: str) -> web.Application:
    spec = bc.CONFIG_BY_NAME.get(config)
    if spec is None:
        raise SystemExit(
            f"app.py: unknown configuration {config!r}; choose from " + ", ".join(bc.CONFIG_BY_NAME)
        )
    if spec.family == "bare":
        return bare_app()
    if spec.family == "limit":
        limits: dict[str, Callable[[], web.Application]] = {
            "untouched-limit": untouched_limit_app,
            "cookie-limit": cookie_limit_app,
            "memory-limit": memory_limit_app,
            "cookie-limit-adj": lambda: cookie_limit_app(adjusted=True),
            "memory-limit-adj": lambda: memory_limit_app(adjusted=True),
            "jwt-limit": jwt_limit_app,
            "jwt-limit-adj": lambda: jwt_limit_app(adjusted=True),
        }
        return limits[config]()
    if spec.family == "ours":
        return ours_app(config)
    if spec.family == "aiohttp-session":
        return aiohttp_session_app(config)
    builders = {
        "jwt-floor": jwt_floor_app,
        "sql-sqlite-floor": sql_sqlite_floor_app,
        "sql-mariadb-floor": sql_mariadb_floor_app,
        "redis-floor": redis_floor_app,
        "memcached-floor": memcached_floor_app,
        "postgres-floor": postgres_floor_app,
        "mongo-floor": mongo_floor_app,
    }
    return builders[config]()


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit("usage: python benchmarks/app.py CONFIG PORT")
    app = build_app(argv[1])
    web.run_app(app, host="127.0.0.1", port=int(argv[2]), access_log=None, print=None)


if __name__ == "__main__":
    main(sys.argv)
