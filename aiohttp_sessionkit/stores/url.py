"""store_from_url(): pick a store by URL, so a deployment chooses its store by configuration."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from urllib.parse import parse_qsl, urlsplit

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
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        from .memory import MemoryStore

        if parts.netloc or parts.path not in ("", "/"):
            raise ConfigurationError(
                "a memory:// URL names no host or path: use memory:// or memory://?max_entries=N"
            )
        query = _options(scheme, parts.query, ("max_entries",))
        try:
            max_entries = int(query.get("max_entries", 100_000))
        except ValueError:
            raise ConfigurationError(f"memory:// max_entries must be an integer: {url!r}") from None
        return MemoryStore(max_entries=max_entries)
    if scheme in ("postgresql", "postgres", "mongodb", "mongodb+srv", "mysql+asyncmy",
                  "mysql+aiomysql", "postgresql+asyncpg"):  # fmt: skip
        # One path segment, the database: anything more is a typo the driver would fold
        # into the database name, or drop.
        if parts.path.strip("/").count("/"):
            raise ConfigurationError(
                f"a {scheme}:// URL takes one path segment, the database name "
                f"({scheme}://host/dbname); this one has {parts.path.count('/')}"
            )
    if scheme in ("mongodb", "mongodb+srv"):
        _check_mongo_options(parts.query)
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


def _options(scheme: str, query: str, known: Collection[str]) -> dict[str, str]:
    """The query options of a store URL, each known and given once; else ConfigurationError."""
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigurationError(f"the {scheme}:// URL's query is malformed") from None
    for name, value in pairs:
        if name not in known:
            raise ConfigurationError(_unknown(scheme, name, known))
        if name in options:
            raise ConfigurationError(f"the {scheme}:// URL gives the option {name!r} twice")
        options[name] = value
    return options


def _unknown(scheme: str, name: str, known: Collection[str]) -> str:
    hint = difflib.get_close_matches(name, known, n=1)
    return f"the {scheme}:// URL has an unknown option {name!r}" + (
        f"; did you mean {hint[0]!r}?" if hint else f"; the options are {', '.join(known)}"
    )


def _check_mongo_options(query: str) -> None:
    """Unknown MongoDB URI options are a warning in PyMongo; a typo here is refused."""
    try:
        from pymongo.common import URI_OPTIONS_ALIAS_MAP, URI_OPTIONS_VALIDATOR_MAP
    except ImportError:  # the store's own import names the extra to install
        return
    known = {*URI_OPTIONS_VALIDATOR_MAP, *URI_OPTIONS_ALIAS_MAP}
    for name, _ in parse_qsl(query, keep_blank_values=True):
        if name.lower() not in known:
            raise ConfigurationError(_unknown("mongodb", name, sorted(known)))
