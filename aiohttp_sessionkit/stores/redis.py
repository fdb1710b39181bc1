"""Redis store: one string key per session, native expiry with ``EX``."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

try:
    import redis as redis_sync
    import redis.asyncio as aioredis
    import redis.exceptions as redis_errors
    from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel
    from redis.backoff import ExponentialBackoff
    from redis.commands.core import AsyncScript
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'RedisStore needs the redis package: pip install "aiohttp-sessionkit[redis]"'
    ) from exc

from ..abc import ServerStore
from ..batching import Batcher
from ..exceptions import ConfigurationError, StoreUnavailable
from ._startup import open_or_defer

__all__ = ["RedisStore"]


_URL_SCHEMES = frozenset({"redis", "rediss", "unix"})
#: ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?options]``
_SENTINEL_SCHEME = "redis+sentinel"
_MAX_PREFIX_LENGTH = 128

# Applied to clients built from a URL; query parameters in the URL
# (``?socket_timeout=...``) take precedence. Both stay below the session layer's default
# store_timeout (5 s): a paused or blackholed primary then costs a request one socket
# timeout and a 503 from the store, and the connection is dropped (a failover moves the
# client to the new primary), instead of holding every request until the budget runs out.
_SOCKET_CONNECT_TIMEOUT = 2.0
_SOCKET_TIMEOUT = 2.0
#: Sentinels answer one small query each; a dead one should be skipped quickly.
_SENTINEL_SOCKET_TIMEOUT = 0.5
_MAX_CONNECTIONS = 100

# "Cannot reach the server" as opposed to "the server refused the command". BusyLoadingError,
# AuthenticationError and AuthorizationError are ConnectionError subclasses; OSError covers
# what escapes redis-py's wrapping (and the builtin TimeoutError). CLUSTERDOWN means no node
# can serve the slot right now, which is the same situation for a caller. OOM (maxmemory
# reached under the noeviction policy) refuses writes until memory frees up: a 503 too.
# redis-py 8.2 added RedisClusterUnreachableError (a RedisClusterException, not a RedisError)
# for a slot-map refresh that reached no node; older releases in our range lack the class.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    redis_errors.OutOfMemoryError,
    OSError,
    *filter(None, [getattr(redis_errors, "RedisClusterUnreachableError", None)]),
)


def _is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means the server cannot serve us now (a 503), not a bug of ours."""
    return isinstance(exc, _UNAVAILABLE) or _failover_error(exc)


def _failover_error(exc: BaseException) -> bool:
    """True for the errors redis-py raises outside ``_UNAVAILABLE`` while a topology changes.

    Checked only after ``_UNAVAILABLE``; each case is as narrow as we could make it, so
    that a bug in our own code or a misuse of the client still surfaces as itself:

    - ``ClusterError`` (a ``RedisError``): "TTL exhausted" once RedisCluster has spent its
      redirects and retries on a slot that moves or whose node is down; ``ClusterDownError``
      (CLUSTERDOWN, a whole shard down) and ``MasterDownError`` are subclasses.
    - ``ReadOnlyError`` (READONLY): a write reached a primary that was just demoted to a
      replica (CLUSTER FAILOVER, a Sentinel switch) before the client learnt the new primary.
    - ``TryAgainError`` (TRYAGAIN): a slot being migrated.
    - ``RedisClusterException``, which subclasses ``Exception`` and not ``RedisError``: only
      ``SlotNotCoveredError`` and the ones raised while refreshing the slot map
      (``NodesManager.initialize``: "Redis Cluster cannot be connected", "All slots are not
      covered", startup nodes disagreeing). Its other uses are programming errors (a
      cross-slot command, a command without a key) and stay what they are.
    - The driver race below.
    """
    if isinstance(exc, redis_errors.ClusterError | redis_errors.ReadOnlyError):
        return True
    if isinstance(exc, redis_errors.TryAgainError | redis_errors.SlotNotCoveredError):
        return True
    if isinstance(exc, redis_errors.RedisClusterException):
        return _raised_in(exc, "redis.asyncio.cluster", "initialize") and not str(exc).startswith(
            "Cluster mode is not enabled"
        )
    # Driver bug, redis-py 8.1.0, redis/asyncio/connection.py (upstream report material):
    # "asyncio RedisCluster: AttributeError: 'NoneType' object has no attribute 'writelines'
    # from Connection.send_packed_command under concurrent load during a failover; expected
    # a ConnectionError." While a failover makes RedisCluster refresh its slot map, it
    # disconnects connections that other tasks are still using (the refresh, and
    # ClusterPipeline's retry, which closes the whole client); disconnect() sets
    # ``_writer``/``_reader`` to None, and a task that already passed its ``is_connected``
    # check then calls ``self._writer.writelines(...)`` on None. Seen in about one SIGKILL
    # failover in fifteen at first; 18 requests in ten failovers in
    # tests/system/test_scale_redis.py.
    # Only an AttributeError on None raised inside that module counts: our code never runs
    # there, so a bug of ours still surfaces as itself.
    if isinstance(exc, AttributeError):
        return exc.obj is None and _raised_in(exc, "redis.asyncio.connection", None)
    return False


def _raised_in(exc: BaseException, module: str, function: str | None) -> bool:
    """True when the innermost frame of ``exc``'s traceback is in ``module`` (``function``)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    if frame.f_globals.get("__name__") != module:
        return False
    return function is None or frame.f_code.co_name == function


class _Pipeline(Protocol):
    def set(self, name: str, value: bytes, *, ex: int, nx: bool = ..., xx: bool = ...) -> Any: ...

    def delete(self, *names: str) -> Any: ...

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any: ...

    def execute(self, raise_on_error: bool = ...) -> Awaitable[list[Any]]: ...


class _Commands(Protocol):
    """The commands the store uses, as ``redis.asyncio`` clients provide them."""

    def mget(self, keys: list[str]) -> Awaitable[list[bytes | None]]: ...

    def get(self, name: str) -> Awaitable[bytes | None]: ...

    def set(
        self, name: str, value: bytes, *, ex: int, nx: bool = ..., xx: bool = ...
    ) -> Awaitable[bool | None]: ...

    def delete(self, *names: str) -> Awaitable[int]: ...

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Awaitable[Any]: ...

    def pipeline(self, transaction: bool = ...) -> _Pipeline: ...


#: ServerStore.replace in one step on the server: Redis runs a script atomically, so no
#: other command lands between the comparison and the write. One key (KEYS[1]), so it runs
#: on a Redis Cluster without CROSSSLOT; GET of a missing or expired key gives false, which
#: equals no string: nothing is written then.
_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
    return 1
end
return 0
"""
_REPLACE_SHA = hashlib.sha1(_REPLACE.encode(), usedforsecurity=False).hexdigest()

#: A write: the command ("SET NX", "SET XX", "CAS" or "DEL"), the record key, the payload,
#: the TTL, and the payload a CAS expects (else empty).
_Write = tuple[str, str, bytes, int, bytes]
_Item = TypeVar("_Item")


class RedisStore(ServerStore):
    """Session store on Redis or Redis Cluster (``redis.asyncio``).

    Each session is one string key, ``key_prefix`` + a 64-hex hash of the id, always written
    with ``EX`` so Redis expires it (``SET NX EX`` to create, ``SET XX EX`` to update).
    Concurrent requests share round trips: the reads issued in one event-loop iteration go
    as one ``MGET``, the writes as one pipeline without a transaction. A ``RedisCluster``
    works as well as a ``Redis`` (there each call is its own command, so that a shard
    failing over delays and fails only the requests for its own sessions), and so does a primary
    managed by Redis Sentinel: a ``redis+sentinel://host:26379,host:26380/mymaster/0`` URL,
    or a client from ``redis.asyncio.sentinel.Sentinel(...).master_for(...)``.
    A store built from a URL owns its client and closes it in :meth:`close`; a client
    passed in is borrowed and never closed.

    Errors redis-py raises while the server cannot be reached, or while a cluster or a
    Sentinel is failing over (CLUSTERDOWN, READONLY from a demoted primary, an unreachable
    cluster, no primary known to the sentinels), become
    :class:`~aiohttp_sessionkit.StoreUnavailable`: a 503, never a 500.
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
        self._sentinel_target: _SentinelTarget | None = None
        self._sentinel: Sentinel | None = None  # only for a redis+sentinel:// URL
        self._replace: AsyncScript | None = None  # registered on first NOSCRIPT
        if isinstance(url_or_client, str):
            if urlsplit(url_or_client).scheme.lower() == _SENTINEL_SCHEME:
                self._sentinel_target = _parse_sentinel_url(url_or_client)
                self._url = url_or_client
            else:
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
            # One quick retry on a broken connection (a restart or failover left a dead
            # socket in the pool). All five commands are safe to repeat (a CAS repeated after
            # it landed finds its own payload, compares unequal and writes nothing); timeouts
            # are not retried, so a hung server costs one timeout, not several.
            retry = Retry(
                ExponentialBackoff(cap=0.1, base=0.01),
                1,
                supported_errors=(redis_errors.ConnectionError,),
            )
            target = self._sentinel_target
            if target is not None:
                # Through a Callable: redis-py 8.1 leaves Sentinel.__init__ untyped, 8.2 types
                # it, and strict mypy must pass with both.
                make_sentinel: Callable[..., Sentinel] = Sentinel
                self._sentinel = make_sentinel(
                    target.sentinels,
                    sentinel_kwargs={
                        "socket_timeout": _SENTINEL_SOCKET_TIMEOUT,
                        "socket_connect_timeout": _SENTINEL_SOCKET_TIMEOUT,
                        **target.sentinel_options,
                    },
                )
                # master_for asks the sentinels for the primary at each new connection and
                # drops its connections when the primary changes: a failover needs no
                # restart. Closing the client closes its pool.
                options: dict[str, Any] = {
                    "db": target.db,
                    "max_connections": _MAX_CONNECTIONS,
                    "socket_connect_timeout": _SOCKET_CONNECT_TIMEOUT,
                    "socket_timeout": _SOCKET_TIMEOUT,
                    "retry": retry,
                    **target.options,  # the URL's own options win
                }
                self._client = self._sentinel.master_for(target.service, **options)
            else:
                pool = aioredis.ConnectionPool.from_url(
                    self._url,
                    max_connections=_MAX_CONNECTIONS,
                    socket_connect_timeout=_SOCKET_CONNECT_TIMEOUT,
                    socket_timeout=_SOCKET_TIMEOUT,
                    retry=retry,
                )
                self._client = aioredis.Redis.from_pool(pool)  # the client closes the pool
        return self._client

    async def open(self) -> None:
        """Create the client if the store owns one, and ask the server for a PING: a server
        that is down is logged once, as for every server store, and startup carries on."""
        client = self.client

        async def ping() -> None:
            try:
                await client.ping()
            except _UNAVAILABLE as exc:
                raise _unavailable("PING", exc) from exc
            except Exception as exc:
                if _failover_error(exc):
                    raise _unavailable("PING", exc) from exc
                raise

        await open_or_defer(self, ping)

    async def close(self) -> None:
        """Close the client if the store created it; a borrowed client is left open."""
        if self._url is None or self._client is None:
            return
        await self._reads.drain()
        await self._writes.drain()
        client, self._client = self._client, None
        await client.aclose()
        sentinel, self._sentinel = self._sentinel, None
        if sentinel is not None:
            for connection in sentinel.sentinels:
                await connection.aclose()

    async def get(self, key: str) -> bytes | None:
        name = self._key_prefix + key
        result: bytes | None = await self._await("GET", self._reads, name)
        return result

    async def create(self, key: str, data: bytes, ttl: int) -> bool:
        return bool(await self._await("SET NX", self._writes, ("SET NX", key, data, ttl, b"")))

    async def update(self, key: str, data: bytes, ttl: int) -> bool:
        return bool(await self._await("SET XX", self._writes, ("SET XX", key, data, ttl, b"")))

    async def remove(self, key: str) -> None:
        await self._await("DEL", self._writes, ("DEL", key, b"", 0, b""))

    async def replace(self, key: str, expected: bytes, data: bytes, ttl: int) -> bool:
        # EVALSHA, batched with the other writes. The server keeps the script, never a
        # request's data; a server that does not know it yet (a restart, a failover, a new
        # cluster node) answers NOSCRIPT, having run nothing, and redis-py's script object
        # then loads it and runs it again.
        write = ("CAS", key, data, ttl, expected)
        try:
            return bool(await self._await("EVALSHA", self._writes, write))
        except redis_errors.NoScriptError:
            pass
        try:
            client = self.client
            script = self._replace
            if script is None:
                script = self._replace = client.register_script(_REPLACE)
            name = self._key_prefix + key
            return bool(await script(keys=[name], args=[expected, data, ttl], client=client))
        except Exception as exc:
            if _is_outage(exc):
                raise _unavailable("EVALSHA", exc) from exc
            raise

    async def _await(self, command: str, batcher: Batcher[_Item], item: _Item) -> Any:
        try:
            client = self.client
            if isinstance(client, aioredis.RedisCluster):
                return await self._on_cluster(client, item)
            return await batcher.call(item)
        except Exception as exc:
            # Outages, and the failover states of a cluster or a Sentinel-managed primary
            # (see _failover_error), are a 503; anything else is a bug and stays itself.
            if _is_outage(exc):
                raise _unavailable(command, exc) from exc
            raise

    async def _on_cluster(self, client: aioredis.RedisCluster, item: object) -> Any:
        """One command of its own for each call on a Redis Cluster: no batching.

        A batch holds keys of every shard and completes when its slowest command does, so
        one shard failing over would hold (and, past ``store_timeout``, fail) the requests
        of the healthy shards with it. redis-py's ClusterPipeline and ``mget_nonatomic``
        couple shards harder still: a connection error on one node closes the
        connections to every node (``RedisCluster.aclose()``, redis-py 8.1.0). Sessions
        hash to random slots, so a batch could seldom share an MGET anyway.
        """
        # The slot map first (a no-op once loaded): without it the commands of a first
        # burst all go to one node and come back MOVED, and redis-py 8.1.0 rebuilds its
        # node table under the commands still in flight, closing their connections; a
        # create could then be retried after it had landed.
        await client.initialize()
        commands = cast(_Commands, client)
        if isinstance(item, str):
            return await commands.get(item)
        command, key, data, ttl, expected = cast(_Write, item)
        return await _send(commands, command, self._key_prefix + key, data, ttl, expected)

    async def _read_many(self, names: list[str]) -> list[Any]:
        """One MGET for every read of the batch."""
        # redis-py annotates commands as "result or awaitable" (one mixin serves the sync
        # and async clients); on an asyncio client they are always awaitable.
        call = cast(_Commands, self.client).mget(names)
        if self._gate is None:
            return await call
        async with self._gate:
            return await call

    async def _write_many(self, writes: list[_Write]) -> list[Any]:
        """One command, or a pipeline (no transaction) of the batch's writes."""
        client = cast(_Commands, self.client)
        prefix = self._key_prefix
        if len(writes) == 1:
            command, key, data, ttl, expected = writes[0]
            call: Awaitable[Any] = _send(client, command, prefix + key, data, ttl, expected)
        else:
            pipe = client.pipeline(transaction=False)
            for command, key, data, ttl, expected in writes:
                _send(pipe, command, prefix + key, data, ttl, expected)
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


def _unavailable(command: str, exc: BaseException) -> StoreUnavailable:
    # Neither the key nor the payload goes into the message: the error type and redis-py's
    # text (host, port, errno) are what an operator needs.
    return StoreUnavailable(
        f"Redis {command} failed, the server is unavailable: {type(exc).__name__}: {exc}"
    )


def _send(
    client: _Commands | _Pipeline, command: str, name: str, data: bytes, ttl: int, expected: bytes
) -> Any:
    if command == "SET XX":
        return client.set(name, data, ex=ttl, xx=True)
    if command == "CAS":
        return client.evalsha(_REPLACE_SHA, 1, name, expected, data, ttl)
    if command == "SET NX":
        return client.set(name, data, ex=ttl, nx=True)
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


class _SentinelTarget:
    """A parsed ``redis+sentinel://`` URL."""

    __slots__ = ("db", "options", "sentinel_options", "sentinels", "service")

    def __init__(
        self,
        sentinels: list[tuple[str, int]],
        service: str,
        db: int,
        options: dict[str, Any],
        sentinel_options: dict[str, Any],
    ) -> None:
        self.sentinels = sentinels
        self.service = service
        self.db = db
        self.options = options
        self.sentinel_options = sentinel_options


#: Query options of a redis+sentinel:// URL: the first two apply to the primary's
#: connections, the last to the connections to the sentinels.
_SENTINEL_FLOAT_OPTIONS = frozenset({"socket_timeout", "socket_connect_timeout"})
_SENTINEL_HOW_TO = (
    "use redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]"
    "[?socket_timeout=S&socket_connect_timeout=S&sentinel_password=P]"
)


def _parse_sentinel_url(url: str) -> _SentinelTarget:
    """Parse ``redis+sentinel://...``; a mistake raises ConfigurationError (URL not echoed)."""
    parts = urlsplit(url)
    hosts_part = parts.netloc.rpartition("@")[2]
    sentinels: list[tuple[str, int]] = []
    for entry in hosts_part.split(","):
        host, _, port_text = entry.strip().rpartition(":")
        if not host:
            host, port_text = port_text, "26379"  # Sentinel's default port
        host = host.strip("[]")  # an IPv6 literal
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigurationError(f"RedisStore sentinel address is invalid; {_SENTINEL_HOW_TO}")
        sentinels.append((host, int(port_text)))
    path = [segment for segment in parts.path.split("/") if segment]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigurationError(
            f"RedisStore sentinel URL needs the service name (and optionally a db number) "
            f"as its path; {_SENTINEL_HOW_TO}"
        )
    options: dict[str, Any] = {}
    sentinel_options: dict[str, Any] = {}
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        value = values[-1]
        if name in _SENTINEL_FLOAT_OPTIONS:
            try:
                seconds = float(value)
            except ValueError:
                seconds = -1.0
            if not seconds > 0:
                raise ConfigurationError(
                    f"RedisStore sentinel URL option {name} must be a positive number of "
                    f"seconds; {_SENTINEL_HOW_TO}"
                )
            options[name] = seconds
        elif name == "sentinel_password":
            sentinel_options["password"] = value
        else:
            raise ConfigurationError(
                f"RedisStore sentinel URL option {name!r} is not supported; {_SENTINEL_HOW_TO}"
            )
    return _SentinelTarget(
        sentinels, unquote(path[0]), int(path[1]) if len(path) == 2 else 0, options,
        sentinel_options,
    )  # fmt: skip


def _check_url(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _URL_SCHEMES:
        # The URL itself stays out of the message: it may contain a password.
        raise ConfigurationError(
            f"RedisStore URL scheme {scheme + '://' if scheme else '(none)'} is not supported; "
            "use redis://host:port/db, rediss://host:port/db (TLS), unix:///path/to.sock or "
            "redis+sentinel://host:port,host:port/service/db"
        )
    try:
        parse_url(url)
    except ValueError as exc:
        raise ConfigurationError(f"RedisStore URL is invalid: {exc}") from None
    parts = urlsplit(url)
    # redis-py reads a path that is no number as "no db" (database 0, silently), and hands
    # unknown query options to every connection, failing only when the first one opens.
    if scheme != "unix" and not parts.path.strip("/").isdigit() and parts.path not in ("", "/"):
        raise ConfigurationError(
            "RedisStore URL path must be a database number, for example redis://host:6379/0"
        )
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _URL_OPTIONS:
            raise ConfigurationError(
                f"RedisStore URL option {name!r} is not supported; the options are "
                f"{', '.join(sorted(_URL_OPTIONS))}"
            )
    return url


#: Query options of a redis://, rediss:// or unix:// URL: those redis-py parses, and the
#: string-valued connection settings (TLS files, client name).
_URL_OPTIONS = frozenset(URL_QUERY_ARGUMENT_PARSERS) | {
    "client_name",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_cert_reqs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
    "ssl_ciphers",
}


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
