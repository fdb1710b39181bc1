"""store_from_url(): pick a store by URL, so a deployment chooses its store by configuration."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from ..abc import AbstractStore
from ..exceptions import ConfigurationError

__all__ = ["store_from_url"]

_EXTRAS = {
    "redis": "redis",
    "postgres": "postgres",
    "mongo": "mongo",
    "sql": "sql",
    "memcached": "memcached",
}
#: SQLAlchemy URL schemes served by SQLAlchemyStore. Plain postgresql:// stays PostgresStore.
_SQL_SCHEMES = ("sqlite+aiosqlite", "mysql+asyncmy", "mysql+aiomysql", "postgresql+asyncpg")

#: Every URL scheme store_from_url accepts, in the order error messages list them.
SCHEMES = (
    "memory://",
    "redis://",
    "rediss://",
    "unix://",
    "redis+sentinel://",
    "postgresql://",
    "postgres://",
    "mongodb://",
    "mongodb+srv://",
    "sqlite+aiosqlite://",
    "mysql+asyncmy://",
    "mysql+aiomysql://",
    "postgresql+asyncpg://",
    "memcached://",
)


def store_from_url(url: str) -> AbstractStore:
    """A store for ``url``; the store owns the client it creates and closes it on cleanup.

    Schemes: ``memory://`` (optional ``?max_entries=N``), ``redis://``, ``rediss://``,
    ``unix://``, ``redis+sentinel://host:port,host:port/service/db`` (Redis),
    ``postgresql://``, ``postgres://``, ``mongodb://``, ``mongodb+srv://``, and for
    :class:`~aiohttp_sessionkit.SQLAlchemyStore` ``sqlite+aiosqlite://``,
    ``mysql+asyncmy://``, ``mysql+aiomysql://`` and ``postgresql+asyncpg://``, and
    ``memcached://host:port`` (:class:`~aiohttp_sessionkit.MemcachedStore`). An unknown
    scheme or a missing driver raises with what to install.
    """
    if not isinstance(url, str):
        raise TypeError(f"store URL must be a str, not {type(url).__name__}")
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from .memory import MemoryStore

        query = parse_qs(urlsplit(url).query)
        try:
            max_entries = int(query["max_entries"][0]) if "max_entries" in query else 100_000
        except ValueError:
            raise ConfigurationError(f"memory:// max_entries must be an integer: {url!r}") from None
        return MemoryStore(max_entries=max_entries)
    if scheme in ("redis", "rediss", "unix", "redis+sentinel"):
        driver = "redis"
    elif scheme in ("postgresql", "postgres"):
        driver = "postgres"
    elif scheme in ("mongodb", "mongodb+srv"):
        driver = "mongo"
    elif scheme in _SQL_SCHEMES:
        driver = "sql"
    elif scheme == "memcached":
        driver = "memcached"
    else:
        raise ConfigurationError(
            # Never the URL itself: without a scheme, nothing shows where a password is.
            "no session store for the URL scheme "
            f"{repr(scheme + '://') if scheme else '(none)'}; use "
            f"one of {', '.join(SCHEMES)}"
        )
    try:
        if driver == "redis":
            from .redis import RedisStore

            return RedisStore(url)
        if driver == "postgres":
            from .postgres import PostgresStore

            return PostgresStore(url)
        if driver == "sql":
            # Imported for SQLAlchemy itself; the store names the extra of a missing DB driver.
            from .sql import SQLAlchemyStore

            return SQLAlchemyStore(url)
        if driver == "memcached":
            from .memcached import MemcachedStore

            return MemcachedStore(url)
        from .mongo import MongoStore

        return MongoStore(url)
    except ImportError as exc:
        raise ConfigurationError(
            f"the {scheme}:// store needs its driver: pip install "
            f"'aiohttp-sessionkit[{_EXTRAS[driver]}]' ({exc})"
        ) from exc
