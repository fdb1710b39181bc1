"""Redis store: one string key per session, native expiry with ``EX``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import urlsplit

try:
    import redis as redis_sync
    import redis.asyncio as aioredis
    import redis.exceptions as redis_errors
    from redis.asyncio.connection import parse_url
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'RedisStore needs the redis package: pip install "aiohttp-sessionkit[redis]"'
    ) from exc

from ..abc import ServerStore
from ..batching import Batcher
from ..exceptions import ConfigurationError, StoreUnavailable

__all__ = ["RedisStore"]


_URL_SCHEMES = frozenset({"redis", "rediss", "unix"})
_MAX_PREFIX_LENGTH = 128

# Applied to clients built from a URL; query parameters in the URL
# (``?socket_timeout=...``) take precedence. Without them a blackholed server would hang a
# request until the session layer's time budget runs out.
_SOCKET_CONNECT_TIMEOUT = 5.0
_SOCKET_TIMEOUT = 5.0
_MAX_CONNECTIONS = 100

# "Cannot reach the server" as opposed to "the server refused the command". BusyLoadingError,
# AuthenticationError and AuthorizationError are ConnectionError subclasses; OSError covers
# what escapes redis-py's wrapping (and the builtin TimeoutError). CLUSTERDOWN means no node
# can serve the slot right now, which is the same situation for a caller.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    OSError,
)


class _Pipeline(Protocol):
    def set(self, name: str, value: bytes, *, ex: int, nx: bool = ..., xx: bool = ...) -> Any: ...

    def delete(self, *names: str) -> Any: ...

    def execute(self, raise_on_error: bool = ...) -> Awaitable[list[Any]]: ...


class _Commands(Protocol):
    """The commands the store uses, as ``redis.asyncio`` clients provide them."""

    def mget(self, keys: list[str]) -> Awaitable[list[bytes | None]]: ...

    def set(
        self, name: str, value: bytes, *, ex: int, nx: bool = ..., xx: bool = ...
    ) -> Awaitable[bool | None]: ...

    def delete(self, *names: str) -> Awaitable[int]: ...

    def pipeline(self, transaction: bool = ...) -> _Pipeline: ...


#: A write: the command ("SET NX", "SET XX" or "DEL"), the record key, the payload, the TTL.
_Write = tuple[str, str, bytes, int]
_Item = TypeVar("_Item")


class RedisStore(ServerStore):
    """Session store on Redis or Redis Cluster (``redis.asyncio``).

    Each session is one string key, ``key_prefix`` + a 64-hex hash of the id, always written
    with ``EX`` so Redis expires it (``SET NX EX`` to create, ``SET XX EX`` to update).
    Concurrent requests share round trips: the reads issued in one event-loop iteration go
    as one ``MGET``, the writes as one pipeline without a transaction. A ``RedisCluster``
    works as well as a ``Redis`` (its MGET is split by hash slot). A store built from a URL
    owns its client and closes it in :meth:`close`; a client passed in is borrowed and
    never closed.
    """

    def __init__(
        self,
        url_or_client: str | aioredis.Redis | aioredis.RedisCluster,
        *,
        key_prefix: str = "session:",
    ) -> None:
        self._key_prefix = _check_prefix(key_prefix)
        self._url: str | None
        self._gate: asyncio.Semaphore | None = None  # only for a client the store owns
        self._reads: Batcher[str] = Batcher(self._read_many)
        self._writes: Batcher[_Write] = Batcher(self._write_many)
        self._client: aioredis.Redis | aioredis.RedisCluster | None
        if isinstance(url_or_client, str):
            self._url = _check_url(url_or_client)
            self._client = None  # created on first use: the constructor does no I/O
        else:
            self._url = None
            self._client = _check_client(url_or_client)

    @property
    def key_prefix(self) -> str:
        """The prefix put before every record key."""
        return self._key_prefix

    @property
    def owns_client(self) -> bool:
        """True when the store built its client from a URL and will close it."""
        return self._url is not None

    @property
    def client(self) -> aioredis.Redis | aioredis.RedisCluster:
        """The Redis client in use; for a URL store it is created here if need be (no I/O)."""
        if self._client is None:
            assert self._url is not None
            # Past max_connections redis-py's pool fails at once (MaxConnectionsError), which
            # would turn a burst of requests on a healthy Redis into 503s. A semaphore of
            # the same size makes calls wait for a connection instead; redis-py's own
            # BlockingConnectionPool does that too, but through asyncio.wait_for, a task
            # per command, which costs more than the command on a fast link.
            self._gate = asyncio.Semaphore(_MAX_CONNECTIONS)
            pool = aioredis.ConnectionPool.from_url(
                self._url,
                max_connections=_MAX_CONNECTIONS,
                socket_connect_timeout=_SOCKET_CONNECT_TIMEOUT,
                socket_timeout=_SOCKET_TIMEOUT,
                # One quick retry on a broken connection (a restart or failover left a dead
                # socket in the pool). All four commands are safe to repeat; timeouts are
                # not retried, so a hung server costs one timeout, not several.
                retry=Retry(
                    ExponentialBackoff(cap=0.1, base=0.01),
                    1,
                    supported_errors=(redis_errors.ConnectionError,),
                ),
            )
            self._client = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
        return self._client

    async def open(self) -> None:
        """Create the client if the store owns one. Connects lazily, on the first command."""
        _ = self.client

    async def close(self) -> None:
        """Close the client if the store created it; a borrowed client is left open."""
        if self._url is None or self._client is None:
            return
        await self._reads.drain()
        await self._writes.drain()
        client, self._client = self._client, None
        await client.aclose()

    async def get(self, key: str) -> bytes | None:
        name = self._key_prefix + key
        result: bytes | None = await self._await("GET", self._reads, name)
        return result

    async def create(self, key: str, data: bytes, ttl: int) -> bool:
        return bool(await self._await("SET NX", self._writes, ("SET NX", key, data, ttl)))

    async def update(self, key: str, data: bytes, ttl: int) -> bool:
        return bool(await self._await("SET XX", self._writes, ("SET XX", key, data, ttl)))

    async def remove(self, key: str) -> None:
        await self._await("DEL", self._writes, ("DEL", key, b"", 0))

    async def _await(self, command: str, batcher: Batcher[_Item], item: _Item) -> Any:
        try:
            return await batcher.call(item)
        except _UNAVAILABLE as exc:
            # Neither the key nor the payload goes into the message: the error type and
            # redis-py's text (host, port, errno) are what an operator needs.
            raise StoreUnavailable(
                f"Redis {command} failed, the server is unavailable: {type(exc).__name__}: {exc}"
            ) from exc

    async def _read_many(self, names: list[str]) -> list[Any]:
        """One MGET for every read of the batch (MGET per hash slot on a cluster)."""
        # redis-py annotates commands as "result or awaitable" (one mixin serves the sync
        # and async clients); on an asyncio client they are always awaitable.
        client = self.client
        if isinstance(client, aioredis.RedisCluster):
            call: Awaitable[list[Any]] = client.mget_nonatomic(names)
        else:
            call = cast(_Commands, client).mget(names)
        if self._gate is None:
            return await call
        async with self._gate:
            return await call

    async def _write_many(self, writes: list[_Write]) -> list[Any]:
        """One command, or a pipeline (no transaction) of the batch's writes."""
        client = cast(_Commands, self.client)
        prefix = self._key_prefix
        if len(writes) == 1:
            command, key, data, ttl = writes[0]
            call: Awaitable[Any] = _send(client, command, prefix + key, data, ttl)
        else:
            pipe = client.pipeline(transaction=False)
            for command, key, data, ttl in writes:
                _send(pipe, command, prefix + key, data, ttl)
            call = pipe.execute(raise_on_error=False)
        if self._gate is None:
            result = await call
        else:
            async with self._gate:
                result = await call
        return [result] if len(writes) == 1 else cast(list[Any], result)

    def __repr__(self) -> str:
        # Never the URL: it may carry a password.
        owner = "owned" if self.owns_client else "borrowed"
        return f"<{type(self).__name__} key_prefix={self._key_prefix!r} client={owner}>"


def _send(client: _Commands | _Pipeline, command: str, name: str, data: bytes, ttl: int) -> Any:
    if command == "SET NX":
        return client.set(name, data, ex=ttl, nx=True)
    if command == "SET XX":
        return client.set(name, data, ex=ttl, xx=True)
    return client.delete(name)


def _check_prefix(key_prefix: object) -> str:
    if not isinstance(key_prefix, str):
        raise ConfigurationError(
            f"RedisStore key_prefix must be a str, not {type(key_prefix).__name__}"
        )
    if len(key_prefix) > _MAX_PREFIX_LENGTH:
        raise ConfigurationError(
            f"RedisStore key_prefix is {len(key_prefix)} characters; keep it under "
            f"{_MAX_PREFIX_LENGTH} (it is repeated in every key)"
        )
    if any(not ch.isprintable() or ch.isspace() for ch in key_prefix):
        raise ConfigurationError(
            f"RedisStore key_prefix {key_prefix!r} contains whitespace or control "
            "characters; use something like 'session:' or 'myapp:session:'"
        )
    return key_prefix


def _check_url(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _URL_SCHEMES:
        # The URL itself stays out of the message: it may contain a password.
        raise ConfigurationError(
            f"RedisStore URL scheme {scheme + '://' if scheme else '(none)'} is not supported; "
            "use redis://host:port/db, rediss://host:port/db (TLS) or unix:///path/to.sock"
        )
    try:
        parse_url(url)
    except ValueError as exc:
        raise ConfigurationError(f"RedisStore URL is invalid: {exc}") from None
    return url


def _check_client(client: object) -> aioredis.Redis | aioredis.RedisCluster:
    if isinstance(client, redis_sync.Redis | redis_sync.RedisCluster):
        raise TypeError(
            f"RedisStore needs an asyncio client (redis.asyncio.{type(client).__name__}), "
            f"not the blocking redis.{type(client).__name__}"
        )
    # Duck-typed on purpose: Redis, RedisCluster and wrappers of them all qualify.
    if isinstance(client, str | bytes | bytearray) or not all(
        callable(getattr(client, name, None)) for name in ("mget", "set", "delete", "pipeline")
    ):
        raise TypeError(
            "RedisStore expects a redis://, rediss:// or unix:// URL (str), a "
            f"redis.asyncio.Redis or a redis.asyncio.RedisCluster, not {type(client).__name__}"
        )
    get_encoder = getattr(client, "get_encoder", None)
    encoder: Any = get_encoder() if callable(get_encoder) else None
    if getattr(encoder, "decode_responses", False):
        raise ConfigurationError(
            "RedisStore needs a client that returns bytes (session payloads are binary); "
            "create it with decode_responses=False, the default"
        )
    return cast("aioredis.Redis | aioredis.RedisCluster", client)
