"""Session management for aiohttp: lazy, secure by default, one API over every store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .abc import (
    AbstractLegacyReader,
    AbstractStore,
    AbstractTransport,
    LegacySession,
    ServerStore,
)
from .api import (
    DEFAULT_ABSOLUTE_TIMEOUT,
    DEFAULT_CLOCK_SKEW_TOLERANCE,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_STORE_TIMEOUT,
    SessionOptions,
    SetupOptions,
    get_session,
    new_session,
    save_session,
    session_middleware,
    setup,
)
from .crypto import generate_key
from .exceptions import (
    ConfigurationError,
    CookieTooLarge,
    SerializationError,
    SessionError,
    SessionResponseError,
    StoreContention,
    StoreError,
    StoreUnavailable,
)
from .observe import SessionEvent
from .serializers import JSONSerializer, Serializer
from .session import Session
from .stores.cookie import EncryptedCookieStore
from .stores.memory import MemoryStore
from .stores.url import store_from_url
from .transports import CookieTransport, HeaderTransport
from .users import SessionInfo, end_session, end_user_sessions, user_sessions
from .websockets import SessionWebSocket, session_websocket

if TYPE_CHECKING:
    from .legacy import AiohttpSessionCookie, AiohttpSessionMemcached, AiohttpSessionRedis
    from .stores.jwt import JWKSEndpoint, JWTStore, jwks_handler
    from .stores.memcached import MemcachedStore
    from .stores.mongo import MongoStore
    from .stores.postgres import PostgresStore
    from .stores.redis import RedisStore
    from .stores.sql import SQLAlchemyStore

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ABSOLUTE_TIMEOUT",
    "DEFAULT_CLOCK_SKEW_TOLERANCE",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_STORE_TIMEOUT",
    "AbstractLegacyReader",
    "AbstractStore",
    "AbstractTransport",
    "AiohttpSessionCookie",
    "AiohttpSessionMemcached",
    "AiohttpSessionRedis",
    "ConfigurationError",
    "CookieTooLarge",
    "CookieTransport",
    "EncryptedCookieStore",
    "HeaderTransport",
    "JSONSerializer",
    "JWKSEndpoint",
    "JWTStore",
    "LegacySession",
    "MemcachedStore",
    "MemoryStore",
    "MongoStore",
    "PostgresStore",
    "RedisStore",
    "SQLAlchemyStore",
    "SerializationError",
    "Serializer",
    "ServerStore",
    "Session",
    "SessionError",
    "SessionEvent",
    "SessionInfo",
    "SessionOptions",
    "SessionResponseError",
    "SessionWebSocket",
    "SetupOptions",
    "StoreContention",
    "StoreError",
    "StoreUnavailable",
    "end_session",
    "end_user_sessions",
    "generate_key",
    "get_session",
    "jwks_handler",
    "new_session",
    "save_session",
    "session_middleware",
    "session_websocket",
    "setup",
    "store_from_url",
    "user_sessions",
]

# Drivers with optional dependencies load on first use of their name, so that importing
# this package never imports redis, asyncpg, pymongo, sqlalchemy, jwt or aiomcache.
_LAZY = {
    "RedisStore": ".stores.redis",
    "PostgresStore": ".stores.postgres",
    "MongoStore": ".stores.mongo",
    "MemcachedStore": ".stores.memcached",
    "JWKSEndpoint": ".stores.jwt",
    "JWTStore": ".stores.jwt",
    "jwks_handler": ".stores.jwt",
    "SQLAlchemyStore": ".stores.sql",
    "AiohttpSessionCookie": ".legacy",
    "AiohttpSessionRedis": ".legacy",
    "AiohttpSessionMemcached": ".legacy",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
