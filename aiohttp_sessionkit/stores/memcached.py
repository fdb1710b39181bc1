"""Memcached store: one item per session, created with ``add`` and updated with ``replace``
(or compared and swapped with ``gets`` and ``cas``)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

try:
    import aiomcache
    from aiomcache.pool import Connection, MemcachePool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'MemcachedStore needs the aiomcache package: pip install "aiohttp-sessionkit[memcached]"'
    ) from exc

from ..abc import ServerStore
from ..batching import Batcher
from ..exceptions import ConfigurationError, StoreError, StoreUnavailable
from ._startup import open_or_defer

__all__ = ["MemcachedStore"]

_DEFAULT_PORT = 11211
_MAX_PREFIX_LENGTH = 128  # with the 64-hex key, well under memcached's 250-byte key limit
#: memcached's default item size limit (``memcached -I``).
DEFAULT_MAX_ITEM_SIZE = 1024 * 1024
#: What memcached adds to key and value when it sizes an item (header, CAS, terminators):
#: 59 bytes on memcached 1.6, rounded up.
_ITEM_OVERHEAD = 64
#: memcached reads an expiry above 30 days as a Unix time, not as seconds from now.
_RELATIVE_TTL_LIMIT = 30 * 24 * 3600
#: Connections of a client the store creates. Batching sends every command of an event-loop
#: iteration over one connection, so a few connections serve a busy server.
_POOL_SIZE = 8
#: The longest one round trip (or waiting for a free connection) may take. Below the session
#: layer's default store_timeout (5 s): a frozen server costs a request this, then a 503.
_SOCKET_TIMEOUT = 2.0
#: Bytes of payloads a store remembers with the CAS uniques its reads saw (see
#: MemcachedStore.replace); the oldest are forgotten first.
_REMEMBERED_BYTES = 8 * 1024 * 1024

_T = TypeVar("_T")
#: A write: the command (b"add", b"replace", b"cas" or b"delete"), the item name, payload,
#: TTL, and for ``cas`` the unique the item must still have (0 otherwise).
_Write = tuple[bytes, bytes, bytes, int, int]
#: What ``gets`` found of an item: its payload and its CAS unique.
_Found = tuple[bytes, int]


class _ProtocolError(StoreError):
    """memcached answered something this client does not expect; the connection is dropped."""


class MemcachedStore(ServerStore):
    """Session store on memcached, through an ``aiomcache`` client's connection pool.

    Each session is one item, ``key_prefix`` + a 64-hex hash of the id, always written with
    an expiry so memcached forgets it: ``add`` creates (only if absent), ``replace`` updates
    (only if present, so a save never brings back a session a logout deleted), and a
    merging save's compare-and-swap writes with ``cas``, which memcached refuses once
    anyone else wrote the item since the CAS unique it names was read. Reads use ``gets``,
    so the unique of a payload this store loaded is at hand (up to 8 MiB of recent
    payloads are remembered): a swap from it costs one round trip, else two. A TTL over
    memcached's 30-day limit for relative expiry is sent as an absolute Unix time. The reads
    of one event-loop iteration go as one multi-key ``gets``, the writes as one pipeline.

    memcached may evict any item before its expiry when it runs out of memory: a session can
    end early. There is nothing to purge (expiry is native). Payloads larger than an item may
    be (``max_item_size``, memcached's ``-I``, 1 MiB by default) are refused with
    :class:`~aiohttp_sessionkit.StoreError`, never truncated.

    A store built from a ``memcached://host:port`` URL owns its client and closes it in
    :meth:`close`; an ``aiomcache.Client`` passed in is borrowed and never closed. The store
    speaks the few commands it needs itself over the client's pool, so that a connection
    whose reply was cut short (a timeout, a cancelled request, the server going away) is
    closed instead of answering the next command with a stale reply.
    """

    def __init__(
        self,
        url_or_client: str | aiomcache.FlagClient[Any],
        *,
        key_prefix: str = "session:",
        max_item_size: int = DEFAULT_MAX_ITEM_SIZE,
    ) -> None:
        self._key_prefix = _check_prefix(key_prefix)
        if isinstance(max_item_size, bool) or not isinstance(max_item_size, int):
            raise ConfigurationError("MemcachedStore max_item_size must be an int (bytes)")
        if max_item_size < 1024:
            raise ConfigurationError(
                f"MemcachedStore max_item_size={max_item_size} is below memcached's smallest "
                "item size limit (1024 bytes); use the server's -I setting (1 MiB by default)"
            )
        self._max_item_size = max_item_size
        self._address: tuple[str, int] | None
        self._client: aiomcache.FlagClient[Any] | None
        if isinstance(url_or_client, str):
            self._address = _parse_url(url_or_client)
            self._client = None  # created on first use: the constructor does no I/O
        else:
            self._address = None
            self._client = _check_client(url_or_client)
        self._reads: Batcher[bytes] = Batcher(self._read_many)
        self._cas_reads: Batcher[bytes] = Batcher(self._gets_many)
        # What recent reads found, by item name: payload and CAS unique, oldest first.
        self._seen: OrderedDict[bytes, _Found] = OrderedDict()
        self._seen_bytes = 0
        self._writes: Batcher[_Write] = Batcher(self._write_many)

    @property
    def key_prefix(self) -> str:
        """The prefix put before every item name."""
        return self._key_prefix

    @property
    def max_item_size(self) -> int:
        """The item size limit payloads are checked against (memcached's ``-I``)."""
        return self._max_item_size

    @property
    def owns_client(self) -> bool:
        """True when the store built its client from a URL and will close it."""
        return self._address is not None

    @property
    def client(self) -> aiomcache.FlagClient[Any]:
        """The aiomcache client in use; for a URL store it is created here if need be."""
        if self._client is None:
            assert self._address is not None
            host, port = self._address
            self._client = _check_client(aiomcache.Client(host, port, pool_size=_POOL_SIZE))
        return self._client

    async def open(self) -> None:
        """Check that memcached answers; if it does not, start anyway (logged once)."""
        await open_or_defer(self, self._version)

    async def close(self) -> None:
        """Close the client if the store created it; a borrowed client is left open."""
        await self._reads.drain()
        await self._cas_reads.drain()
        await self._writes.drain()
        if self._address is not None and self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def get(self, key: str) -> bytes | None:
        result: bytes | None = await self._reads.call((self._key_prefix + key).encode())
        return result

    async def create(self, key: str, data: bytes, ttl: int) -> bool:
        write = self._write(b"add", key, data, ttl)
        self._forget(write[1])
        return bool(await self._writes.call(write))

    async def update(self, key: str, data: bytes, ttl: int) -> bool:
        write = self._write(b"replace", key, data, ttl)
        self._forget(write[1])
        return bool(await self._writes.call(write))

    async def replace(self, key: str, expected: bytes, data: bytes, ttl: int) -> bool:
        # memcached compares CAS uniques, not payloads. An item's unique changes with every
        # write, so ``cas`` with the unique of a read stores only if nobody wrote (or
        # deleted, or evicted) the item since: the payload that read found is still there
        # when memcached writes. A payload this store loaded (the session layer swaps from
        # what it loaded) has its unique remembered: one round trip. Otherwise, or if the
        # item changed since, ``gets`` first, compare, then ``cas``.
        write = self._write(b"cas", key, data, ttl)  # the size check, before any I/O
        name = write[1]
        seen = self._forget(name)
        if seen is not None and seen[0] == expected:
            if await self._writes.call((*write[:4], seen[1])):
                return True
        found: _Found | None = await self._cas_reads.call(name)
        if found is None or found[0] != expected:
            return False
        return bool(await self._writes.call((*write[:4], found[1])))

    async def remove(self, key: str) -> None:
        name = (self._key_prefix + key).encode()
        self._forget(name)
        await self._writes.call((b"delete", name, b"", 0, 0))

    def _remember(self, name: bytes, found: _Found) -> None:
        self._forget(name)
        if len(found[0]) > _REMEMBERED_BYTES:
            return
        self._seen[name] = found
        self._seen_bytes += len(found[0])
        while self._seen_bytes > _REMEMBERED_BYTES:
            _, (payload, _) = self._seen.popitem(last=False)
            self._seen_bytes -= len(payload)

    def _forget(self, name: bytes) -> _Found | None:
        found = self._seen.pop(name, None)
        if found is not None:
            self._seen_bytes -= len(found[0])
        return found

    def _write(self, command: bytes, key: str, data: bytes, ttl: int) -> _Write:
        name = (self._key_prefix + key).encode()
        limit = self._max_item_size - len(name) - _ITEM_OVERHEAD
        if len(data) > limit:
            raise StoreError(
                f"the session is {len(data)} bytes, over the {limit} bytes a memcached item "
                f"can hold (max_item_size={self._max_item_size}); nothing was saved. Keep "
                "less in the session, or raise memcached's -I and MemcachedStore's "
                "max_item_size together"
            )
        # Above 30 days memcached takes the number as a Unix time; sent as seconds it would
        # be a date in 1970, and the item would expire at once.
        exptime = ttl if ttl <= _RELATIVE_TTL_LIMIT else int(time.time()) + ttl
        return command, name, data, exptime, 0

    # -- the wire -------------------------------------------------------------------------

    async def _read_many(self, names: list[bytes]) -> list[Any]:
        """One ``gets`` with every name of the batch; the CAS uniques are remembered."""
        found = await self._retrieve(names)
        for name, item in found.items():
            self._remember(name, item)
        return [None if name not in found else found[name][0] for name in names]

    async def _gets_many(self, names: list[bytes]) -> list[Any]:
        """One ``gets`` with every name of the batch: payloads with their CAS uniques."""
        found = await self._retrieve(names)
        return [found.get(name) for name in names]

    async def _retrieve(self, names: list[bytes]) -> dict[bytes, _Found]:
        """The items found by one ``gets``, with their CAS uniques."""
        unique = list(dict.fromkeys(names))

        async def exchange(conn: Connection) -> dict[bytes, _Found]:
            conn.writer.write(b"gets " + b" ".join(unique) + b"\r\n")
            found: dict[bytes, _Found] = {}
            while True:
                line = await conn.reader.readuntil(b"\r\n")
                if line == b"END\r\n":
                    return found
                parts = line.split()
                if (
                    len(parts) != 5
                    or parts[0] != b"VALUE"
                    or not (parts[3].isdigit() and parts[4].isdigit())
                ):
                    raise _reply_error("gets", line)
                value = await conn.reader.readexactly(int(parts[3]) + 2)
                found[parts[1]] = (value[:-2], int(parts[4]))

        return await self._exchange("gets", exchange)

    async def _write_many(self, writes: list[_Write]) -> list[Any]:
        """Every write of the batch in one pipeline; one reply line each, in order."""
        out: list[bytes] = []
        for command, name, data, exptime, cas in writes:
            if command == b"delete":
                out.append(b"delete " + name + b"\r\n")
            elif command == b"cas":
                out.append(b"cas %s 0 %d %d %d\r\n%s\r\n" % (name, exptime, len(data), cas, data))
            else:
                out.append(b"%s %s 0 %d %d\r\n%s\r\n" % (command, name, exptime, len(data), data))

        async def exchange(conn: Connection) -> list[Any]:
            conn.writer.write(b"".join(out))
            results: list[Any] = []
            for command, _, _, _, _ in writes:
                line = await conn.reader.readuntil(b"\r\n")
                if line in (b"STORED\r\n", b"DELETED\r\n"):
                    results.append(True)
                elif line in (b"NOT_STORED\r\n", b"NOT_FOUND\r\n", b"EXISTS\r\n"):
                    # EXISTS: a cas whose item was written by someone else since its gets.
                    results.append(False)
                elif line.startswith(b"SERVER_ERROR "):
                    # The server read the whole command and refused it (out of memory, item
                    # too large for a smaller -I than max_item_size): that write alone fails.
                    results.append(_reply_error(command.decode(), line))
                else:
                    raise _reply_error(command.decode(), line)
            return results

        return await self._exchange("write", exchange)

    async def _version(self) -> None:
        async def exchange(conn: Connection) -> None:
            conn.writer.write(b"version\r\n")
            line = await conn.reader.readuntil(b"\r\n")
            if not line.startswith(b"VERSION "):
                raise _reply_error("version", line)

        await self._exchange("version", exchange)

    async def _exchange(self, command: str, exchange: Callable[[Connection], Awaitable[_T]]) -> _T:
        """Run one round trip on a pooled connection; errors become StoreUnavailable."""
        pool: MemcachePool = self.client._pool
        try:
            async with asyncio.timeout(_SOCKET_TIMEOUT):
                conn = await pool.acquire()
        except (OSError, EOFError) as exc:
            raise _unavailable(command, exc) from exc
        try:
            async with asyncio.timeout(_SOCKET_TIMEOUT):
                return await exchange(conn)
        except BaseException as exc:
            # The reply may be half read: a connection out of step with its replies must
            # never serve another command, so the pool closes it on release.
            conn.reader.set_exception(ConnectionAbortedError("reply not read to its end"))
            if isinstance(exc, OSError | EOFError | asyncio.LimitOverrunError):
                raise _unavailable(command, exc) from exc
            raise
        finally:
            pool.release(conn)

    def __repr__(self) -> str:
        owner = "owned" if self.owns_client else "borrowed"
        return f"<{type(self).__name__} key_prefix={self._key_prefix!r} client={owner}>"


def _reply_error(command: str, line: bytes) -> _ProtocolError:
    # The reply line only (never the payload): memcached's own words, cut short.
    return _ProtocolError(f"memcached {command} failed: {line[:120].strip()!r}")


def _unavailable(command: str, exc: BaseException) -> StoreUnavailable:
    detail = "no reply in time" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
    return StoreUnavailable(f"memcached {command} failed, the server is unavailable: {detail}")


def _check_prefix(key_prefix: object) -> str:
    if not isinstance(key_prefix, str):
        raise ConfigurationError(
            f"MemcachedStore key_prefix must be a str, not {type(key_prefix).__name__}"
        )
    if len(key_prefix) > _MAX_PREFIX_LENGTH:
        raise ConfigurationError(
            f"MemcachedStore key_prefix is {len(key_prefix)} characters; keep it under "
            f"{_MAX_PREFIX_LENGTH} (memcached keys are at most 250 bytes)"
        )
    if not key_prefix.isascii() or any(not c.isprintable() or c.isspace() for c in key_prefix):
        raise ConfigurationError(
            f"MemcachedStore key_prefix {key_prefix!r} contains whitespace, control or "
            "non-ASCII characters, which memcached keys cannot hold; use something like "
            "'session:' or 'myapp:session:'"
        )
    return key_prefix


_HOW_TO = "use memcached://host:port (port 11211 by default)"


def _parse_url(url: str) -> tuple[str, int]:
    """``memcached://host[:port]`` -> (host, port); the URL is never echoed in errors."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "memcached":
        scheme = parts.scheme + "://" if parts.scheme else "(none)"
        raise ConfigurationError(f"MemcachedStore URL scheme {scheme} is not supported; {_HOW_TO}")
    if parts.username or parts.password:
        raise ConfigurationError(
            "MemcachedStore URL carries credentials, but memcached's text protocol has no "
            f"authentication; {_HOW_TO}"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(
            f"MemcachedStore URL has a path, query or fragment, which it does not use; {_HOW_TO}"
        )
    try:
        port = parts.port or _DEFAULT_PORT
    except ValueError:
        raise ConfigurationError(f"MemcachedStore URL has an invalid port; {_HOW_TO}") from None
    if not parts.hostname:
        raise ConfigurationError(f"MemcachedStore URL has no host; {_HOW_TO}")
    return parts.hostname, port


def _check_client(client: object) -> aiomcache.FlagClient[Any]:
    if not isinstance(client, aiomcache.FlagClient):
        raise TypeError(
            "MemcachedStore expects a memcached://host:port URL (str) or an aiomcache.Client, "
            f"not {type(client).__name__}"
        )
    if not isinstance(getattr(client, "_pool", None), MemcachePool):
        raise TypeError(
            "MemcachedStore uses the connection pool of aiomcache 0.8 clients; this "
            f"aiomcache.{type(client).__name__} has none: install aiomcache 0.8"
        )
    return client
