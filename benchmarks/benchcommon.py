"""What run.py, app.py, loadgen.py and memtest.py share: configurations, routes, session data."""

from __future__ import annotations

import json
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


def use_working_tree() -> None:
    """Import aiohttp_sessionkit from this checkout, installed or not.

    The one place benchmarks/ puts the repository root on ``sys.path``: the scripts run as
    ``python benchmarks/NAME.py`` (their own folder is on the path already), and this root is
    where the package and the tests' server harness (``tests.harness.servers``) live.
    """
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)


#: The cookie every configuration uses (aiohttp-session's and our default name).
COOKIE_NAME = "AIOHTTP_SESSION"
#: Routes measured, in order. /login is only used to obtain the cookie.
ROUTES = ("untouched", "read", "write")
#: Server-side TTL the floors write (ours derive theirs from the idle timeout).
FLOOR_TTL = 14 * 24 * 3600

# Environment variables run.py uses to hand backing-server addresses to app.py.
ENV_REDIS_URL = "SESSIONKIT_BENCH_REDIS_URL"
ENV_POSTGRES_DSN = "SESSIONKIT_BENCH_POSTGRES_DSN"
ENV_MONGO_URL = "SESSIONKIT_BENCH_MONGO_URL"
ENV_MYSQL_URL = "SESSIONKIT_BENCH_MYSQL_URL"
ENV_MEMCACHED_URL = "SESSIONKIT_BENCH_MEMCACHED_URL"
ENV_COOKIE_KEY = "SESSIONKIT_BENCH_COOKIE_KEY"
ENV_SQLITE_DIR = "SESSIONKIT_BENCH_SQLITE_DIR"
ENV_JWT_SECRET = "SESSIONKIT_BENCH_JWT_SECRET"  # noqa: S105 - the variable's name


@dataclass(frozen=True)
class Config:
    """One benchmarked configuration: what runs in the server process."""

    name: str
    backend: str | None  # "redis", "memcached", "postgres", "mongo", "mysql" or None
    family: str  # "bare", "limit", "ours", "aiohttp-session", "floor"
    summary: str
    #: How the load presents the session: "cookie" (a Cookie header) or "header"
    #: (``Authorization: Bearer``, new tokens in the ``Session-Token`` response header).
    transport: str = "cookie"

    @property
    def request_header(self) -> str:
        """The request header that carries the session token to this configuration."""
        return "Authorization" if self.transport == "header" else "Cookie"


CONFIGS: tuple[Config, ...] = (
    Config("bare", None, "bare", "plain aiohttp handlers, no middleware"),
    Config(
        "untouched-limit",
        None,
        "limit",
        "one no-op middleware and one no-op on_response_prepare handler, nothing else",
    ),
    Config(
        "cookie-limit",
        None,
        "limit",
        "one middleware: string search for the cookie, AES-GCM open + JSON decode; on a "
        "change JSON encode + AES-GCM seal + Set-Cookie; nothing else",
    ),
    Config(
        "memory-limit",
        None,
        "limit",
        "one middleware: dict lookup by cookie value + JSON decode; on a change JSON encode "
        "+ dict store under the same id, no cookie; nothing else",
    ),
    Config(
        "aiohttp-session-cookie",
        None,
        "aiohttp-session",
        "aiohttp_session + EncryptedCookieStorage (Fernet)",
    ),
    Config(
        "aiohttp-session-redis",
        "redis",
        "aiohttp-session",
        "aiohttp_session + RedisStorage (redis.asyncio)",
    ),
    Config(
        "cookie-limit-adj",
        None,
        "limit",
        "cookie-limit plus what a correct library cannot avoid in aiohttp 3.14: a no-op "
        "on_response_prepare handler, Vary: Cookie, Cache-Control: private with a Set-Cookie",
    ),
    Config(
        "memory-limit-adj",
        None,
        "limit",
        "memory-limit plus the same: a no-op on_response_prepare handler, Vary: Cookie, "
        "Cache-Control: private with a Set-Cookie",
    ),
    Config(
        "jwt-limit",
        None,
        "limit",
        "one middleware: string search for the cookie, HS256 check + JSON decode + exp "
        "check; on a change JSON encode with a new exp + HS256 sign + Set-Cookie; nothing else",
    ),
    Config(
        "jwt-limit-adj",
        None,
        "limit",
        "jwt-limit plus the same as cookie-limit-adj: a no-op on_response_prepare handler, "
        "Vary: Cookie, Cache-Control: private with a Set-Cookie",
    ),
    Config("memory", None, "ours", "aiohttp_sessionkit + MemoryStore"),
    Config("cookie", None, "ours", "aiohttp_sessionkit + EncryptedCookieStore (AES-GCM)"),
    Config(
        "memory-header",
        None,
        "ours",
        "aiohttp_sessionkit + MemoryStore, HeaderTransport (Authorization: Bearer)",
        "header",
    ),
    Config(
        "cookie-header",
        None,
        "ours",
        "aiohttp_sessionkit + EncryptedCookieStore, HeaderTransport (Authorization: Bearer)",
        "header",
    ),
    Config(
        "cookie-legacy",
        None,
        "ours",
        "cookie, with an aiohttp-session cookie reader configured (setup(legacy=...)); our "
        "cookies open, so the reader is never consulted",
    ),
    Config(
        "memory-users",
        None,
        "ours",
        'memory, with sessions bound to their users (setup(user_key="user_id")): the login '
        "binds; reads and writes keep the binding",
    ),
    Config("jwt", None, "ours", "aiohttp_sessionkit + JWTStore (HS256, PyJWT), cookie transport"),
    Config("redis", "redis", "ours", "aiohttp_sessionkit + RedisStore"),
    Config("memcached", "memcached", "ours", "aiohttp_sessionkit + MemcachedStore"),
    Config(
        "sql-sqlite", None, "ours", "aiohttp_sessionkit + SQLAlchemyStore on SQLite (aiosqlite)"
    ),
    Config(
        "sql-mariadb",
        "mysql",
        "ours",
        "aiohttp_sessionkit + SQLAlchemyStore on MariaDB (asyncmy)",
    ),
    Config("postgres", "postgres", "ours", "aiohttp_sessionkit + PostgresStore (asyncpg)"),
    Config("mongo", "mongo", "ours", "aiohttp_sessionkit + MongoStore (PyMongo async)"),
    Config(
        "jwt-floor",
        None,
        "floor",
        "PyJWT in the handler, no library: read = jwt.decode of the cookie (HS256, exp "
        "checked); write = decode + jwt.encode + Set-Cookie",
    ),
    Config("redis-floor", "redis", "floor", "raw redis.asyncio GET / GET+SET EX, no library"),
    Config(
        "memcached-floor",
        "memcached",
        "floor",
        "raw aiomcache get / get+set with an expiry, no library (8 pooled connections, as ours)",
    ),
    Config(
        "sql-sqlite-floor",
        None,
        "floor",
        "raw SQLAlchemy Core on SQLite (aiosqlite), same table shape: SELECT / SELECT+UPDATE",
    ),
    Config(
        "sql-mariadb-floor",
        "mysql",
        "floor",
        "raw SQLAlchemy Core on MariaDB (asyncmy), same table shape: SELECT / SELECT+UPDATE",
    ),
    Config("postgres-floor", "postgres", "floor", "raw asyncpg SELECT / SELECT+UPDATE, no library"),
    Config(
        "mongo-floor", "mongo", "floor", "raw PyMongo find_one / find_one+update_one, no library"
    ),
)
CONFIG_BY_NAME = {config.name: config for config in CONFIGS}
OURS = tuple(config.name for config in CONFIGS if config.family == "ours")
#: The response header that hands a header-transport client its token.
TOKEN_RESPONSE_HEADER = "Session-Token"  # noqa: S105 - a header name


def session_data(seed: int) -> dict[str, Any]:
    """What /login stores: about 100 bytes of JSON (user id, name, roles, CSRF token)."""
    return {
        "user_id": 1_000_000 + seed,
        "name": f"user{seed:07d}",
        "roles": ["member", "editor"],
        "csrf": secrets.token_urlsafe(16),
    }


def compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
