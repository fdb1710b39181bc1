"""Readers for aiohttp-session's cookies and records: switch without logging anyone out.

Give one (or a list) to ``setup(app, store, legacy=...)``. When a request's cookie does not
open in our store, the session layer asks each reader in turn; a session the reader
recognises becomes a new session of ours with the same data, saved under a new id (a new
sealed cookie for the cookie store), and the old record is deleted once that save
succeeded. The client then carries our cookie and the legacy one is never read again.

Readers for aiohttp-session 2.12's formats:

* :class:`AiohttpSessionCookie`: ``EncryptedCookieStorage`` (Fernet), no I/O.
* :class:`AiohttpSessionRedis`: ``RedisStorage``, records ``{cookie_name}_{key}``.
* :class:`AiohttpSessionMemcached`: ``MemcachedStorage``, the same keys in memcached.

There is deliberately no reader for ``SimpleCookieStorage``: its cookie is plain,
unsigned JSON that any client can write, so trusting it would let anyone forge a session
(a logged-in user id, say). Sessions kept in it are lost on the switch.

Every reader returns ``None``, never raises, for a cookie that is malformed, tampered,
from another key, unknown, or older than the reader's ``max_age`` (the ``max_age`` the
application gave aiohttp-session's storage: a session aiohttp-session would have expired
is not migrated). Server readers raise
:class:`~aiohttp_sessionkit.StoreUnavailable` when their server cannot be reached.

aiohttp-session records ``{"created": <epoch seconds>, "session": {...}}``, and resets
``created`` on every write: it is the session's *last write*, which becomes the migrated
session's creation and last-access time.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from . import session as _session
from .abc import AbstractLegacyReader, AbstractStore, LegacySession, ServerStore
from .exceptions import ConfigurationError, StoreUnavailable
from .ids import record_key
from .serializers import check_depth

if TYPE_CHECKING:
    import aiomcache
    import redis.asyncio as aioredis

__all__ = [
    "AiohttpSessionCookie",
    "AiohttpSessionMemcached",
    "AiohttpSessionRedis",
]

#: The key aiohttp-session's ``RedisStorage`` and ``MemcachedStorage`` put in the cookie by
#: default: ``uuid.uuid4().hex``.
UUID4_HEX = r"[0-9a-f]{32}"
# Fernet tokens are url-safe base64; aiohttp's cookie writer quotes those ending in "=".
_FERNET_TOKEN = re.compile(r"[A-Za-z0-9_\-]+={0,2}")
_MAX_COOKIE = 4096
# A record "created" this far in the future is not from a sane clock: refuse it, as our
# own payloads are refused (a far-future creation time would dodge every timeout).
_CLOCK_SKEW = 60

SecretKey = str | bytes | bytearray | Fernet

# Markers of migrated legacy tokens live in the session store under this prefix of the
# namespace; the record key is a hash of it and the token, like a session's (see ids.py),
# so the store never holds the token itself and no session id can name a marker.
_MIGRATED_NAMESPACE = "aiohttp_sessionkit.legacy.migrated:"
_MIGRATED = b"migrated"


def _now() -> int:
    # Through the module, so that a test's fake clock (which patches session.now) applies.
    return _session.now()


def _check_max_age(max_age: object, reader: str) -> int | None:
    if max_age is None:
        return None
    if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age <= 0:
        raise ConfigurationError(
            f"{reader}(max_age={max_age!r}): give the max_age you gave aiohttp-session's "
            "storage (a positive number of seconds), or None if you gave none"
        )
    return max_age


def _check_decoder(decoder: object, reader: str) -> Callable[[str], Any]:
    if not callable(decoder):
        raise ConfigurationError(
            f"{reader}(decoder=...) must be the decoder you gave aiohttp-session (a callable "
            "str -> object, json.loads by default)"
        )
    return cast("Callable[[str], Any]", decoder)


def _check_key_pattern(key_pattern: object, reader: str) -> re.Pattern[str]:
    try:
        pattern: re.Pattern[str] = re.compile(key_pattern)  # type: ignore[call-overload]
    except (TypeError, re.error) as exc:
        raise ConfigurationError(
            f"{reader}(key_pattern={key_pattern!r}) must be a regular expression matching the "
            f"keys your aiohttp-session key_factory made (default {UUID4_HEX!r}): {exc}"
        ) from None
    return pattern


def _legacy_session(
    raw: bytes | str, decoder: Callable[[str], Any], max_age: int | None
) -> LegacySession | None:
    """The session in one aiohttp-session record (JSON text), or None if unusable."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        record = decoder(check_depth(text))  # the library-wide depth limit
    except (UnicodeDecodeError, ValueError, TypeError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    created = record.get("created")
    data = record.get("session")
    if isinstance(created, bool) or not isinstance(created, int | float):
        # aiohttp-session itself treats a record without "created" as expired.
        return None
    if not isinstance(data, dict) or not data or not all(isinstance(k, str) for k in data):
        # {} is aiohttp-session's tombstone for an invalidated session: nothing to keep.
        return None
    created = int(created)
    t = _now()
    if created > t + _CLOCK_SKEW or (max_age is not None and t - created > max_age):
        return None
    return LegacySession(data=data, created=created)


def _fernet(secret_key: object) -> Fernet | MultiFernet:
    """The key(s) as aiohttp-session's EncryptedCookieStorage accepted them."""
    if isinstance(secret_key, Fernet | MultiFernet):
        return secret_key
    if isinstance(secret_key, list | tuple):
        if not secret_key:
            raise ConfigurationError("AiohttpSessionCookie needs at least one key")
        fernets = [_fernet(key) for key in secret_key]
        return fernets[0] if len(fernets) == 1 else MultiFernet(fernets)  # type: ignore[arg-type]
    if isinstance(secret_key, bytes | bytearray):
        if len(secret_key) != 32:
            raise ConfigurationError(
                f"AiohttpSessionCookie got a {len(secret_key)}-byte key: aiohttp-session's "
                "EncryptedCookieStorage took 32 raw bytes (or the url-safe base64 str of them, "
                "or a Fernet object); pass the very value you gave it"
            )
        return Fernet(base64.urlsafe_b64encode(bytes(secret_key)))
    if isinstance(secret_key, str):
        try:
            return Fernet(secret_key)
        except (ValueError, binascii.Error):
            raise ConfigurationError(
                "AiohttpSessionCookie got a str key that is not a Fernet key (44 characters "
                "of url-safe base64); pass the very value you gave EncryptedCookieStorage"
            ) from None
    raise ConfigurationError(
        "AiohttpSessionCookie takes the key as aiohttp-session's EncryptedCookieStorage did: "
        f"32 raw bytes, a url-safe base64 str, or a cryptography Fernet; got "
        f"{type(secret_key).__name__}"
    )


def migration_ledger(store: AbstractStore) -> ServerStore | None:
    """The server store that remembers which legacy tokens were migrated, or None.

    A server-side store remembers them itself; a JWT or encrypted-cookie store in its deny
    list (its ``revocation`` store). Without a deny list they have no server to remember
    anything in.
    """
    if isinstance(store, ServerStore):
        return store
    revocation = getattr(store, "revocation", None)
    return revocation if isinstance(revocation, ServerStore) else None


async def claim_migration(ledger: ServerStore, token: str, *, namespace: str, ttl: int) -> bool:
    """True the first time ``token`` is migrated under ``namespace``, False ever after.

    A create-only write of a marker that lives ``ttl`` seconds (until the token could no
    longer migrate anyway): of two concurrent replays, only one wins.
    """
    key = record_key(_MIGRATED_NAMESPACE + namespace, token)
    return await ledger.create(key, _MIGRATED, ttl)


class AiohttpSessionCookie(AbstractLegacyReader):
    """Reads cookies of aiohttp-session's ``EncryptedCookieStorage`` (Fernet).

    ``secret_key`` is the key given to ``EncryptedCookieStorage``, in any form it accepted:
    32 raw bytes, their url-safe base64 ``str``, or a ``Fernet`` object (or a list of
    those, if different deployments used different keys). ``max_age`` is the storage's
    ``max_age``: older cookies are not migrated. ``decoder`` is the storage's decoder
    (``json.loads`` unless you changed it). No I/O: cookies are read in-process.
    """

    local: ClassVar[bool] = True
    # A cookie that holds the session itself cannot be deleted at the source: each token
    # migrates at most once (the session layer remembers it in the store).
    revocable: ClassVar[bool] = False

    def __init__(
        self,
        secret_key: SecretKey | Sequence[SecretKey],
        *,
        max_age: int | None = None,
        decoder: Callable[[str], Any] = json.loads,
    ) -> None:
        self._fernet = _fernet(secret_key)
        self._max_age = _check_max_age(max_age, "AiohttpSessionCookie")
        self._decoder = _check_decoder(decoder, "AiohttpSessionCookie")

    @property
    def max_age(self) -> int | None:
        """Cookies older than this many seconds (since their last write) are not migrated."""
        return self._max_age

    async def load(self, token: str, *, namespace: str) -> LegacySession | None:
        """The session sealed in an aiohttp-session cookie, or None."""
        if len(token) > _MAX_COOKIE:
            return None
        if len(token) >= 2 and token[0] == token[-1] == '"':
            token = token[1:-1]  # aiohttp quotes the cookie when the token ends in "="
        if not _FERNET_TOKEN.fullmatch(token):
            return None
        max_age = self._max_age
        try:
            if max_age is None:
                plaintext = self._fernet.decrypt(token)
            else:
                # Fernet's own timestamp is the time of the last save: the same rule as
                # aiohttp-session's decrypt(ttl=max_age), on our clock.
                plaintext = self._fernet.decrypt_at_time(token, max_age, _now())
        except InvalidToken:
            return None
        return _legacy_session(plaintext, self._decoder, max_age)

    async def delete(self, token: str, *, namespace: str) -> None:
        """Nothing to delete: the old cookie is replaced by ours on the same response.

        A copy of it would still open here until ``max_age``: the session layer therefore
        remembers each migrated token (``revocable`` is False) and migrates it only once.
        """

    def __repr__(self) -> str:
        return f"<AiohttpSessionCookie max_age={self._max_age!r}>"


class _KeyedReader(AbstractLegacyReader):
    """A reader of records aiohttp-session keyed ``{cookie_name}_{cookie value}``."""

    _name: ClassVar[str]
    revocable: ClassVar[bool] = True  # delete() removes the old record: replays find nothing

    def __init__(
        self,
        *,
        max_age: int | None,
        decoder: Callable[[str], Any],
        key_pattern: str | re.Pattern[str],
    ) -> None:
        self._max_age = _check_max_age(max_age, self._name)
        self._decoder = _check_decoder(decoder, self._name)
        self._key_pattern = _check_key_pattern(key_pattern, self._name)

    @property
    def max_age(self) -> int | None:
        """Records older than this many seconds (since their last write) are not migrated."""
        return self._max_age

    def _record_name(self, token: str, namespace: str) -> str | None:
        # The cookie name is the session's namespace: the legacy cookie is read from the
        # cookie the session is set up under, which is the name aiohttp-session used.
        # Anything not shaped like a key the old storage made never reaches the server.
        if len(token) > _MAX_COOKIE or not self._key_pattern.fullmatch(token):
            return None
        return f"{namespace}_{token}"

    def _unavailable(self, command: str, exc: BaseException) -> StoreUnavailable:
        # Neither the key nor the record in the message: the type and the driver's text.
        return StoreUnavailable(
            f"{self._name} {command} failed, the server is unavailable: {type(exc).__name__}: {exc}"
        )


class AiohttpSessionRedis(_KeyedReader):
    """Reads and deletes the records of aiohttp-session's ``RedisStorage``.

    ``url_or_client`` is a ``redis://`` URL (the reader then owns its client and closes it
    on cleanup) or a ``redis.asyncio.Redis`` (borrowed, left open), on the database
    aiohttp-session used. Records are ``{cookie_name}_{key}``, the cookie name being the
    one the session is set up under (the same cookie carries both formats). ``max_age`` and
    ``decoder`` are the storage's; ``key_pattern`` matches the keys its ``key_factory`` made
    (default: ``uuid4().hex``, aiohttp-session's default); other cookies cost no round trip.
    """

    _name = "AiohttpSessionRedis"

    # _KeyedReader's options repeated, not **kwargs: the signature documents them.
    def __init__(
        self,
        url_or_client: str | aioredis.Redis,
        *,
        max_age: int | None = None,
        decoder: Callable[[str], Any] = json.loads,
        key_pattern: str | re.Pattern[str] = UUID4_HEX,
    ) -> None:
        super().__init__(max_age=max_age, decoder=decoder, key_pattern=key_pattern)
        try:
            import redis.asyncio as aioredis
            import redis.exceptions as redis_errors
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "AiohttpSessionRedis needs the redis package: "
                'pip install "aiohttp-sessionkit[redis]"'
            ) from exc
        self._errors: tuple[type[BaseException], ...] = (
            redis_errors.ConnectionError,
            redis_errors.TimeoutError,
            OSError,
        )
        self._url: str | None = None
        self._client: aioredis.Redis | None = None
        if isinstance(url_or_client, str):
            if not url_or_client.lower().startswith(("redis://", "rediss://", "unix://")):
                raise ConfigurationError(
                    "AiohttpSessionRedis needs a redis://, rediss:// or unix:// URL or a "
                    "redis.asyncio.Redis client"
                )
            self._url = url_or_client  # the client is made on first use: no I/O here
        elif isinstance(url_or_client, aioredis.Redis):
            self._client = url_or_client
        else:
            raise ConfigurationError(
                "AiohttpSessionRedis needs a redis:// URL or the redis.asyncio.Redis client "
                f"aiohttp-session's RedisStorage used, not {type(url_or_client).__name__}"
            )

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            import redis.asyncio as aioredis

            assert self._url is not None
            self._client = aioredis.Redis.from_url(
                self._url, socket_connect_timeout=5.0, socket_timeout=5.0
            )
        return self._client

    async def load(self, token: str, *, namespace: str) -> LegacySession | None:
        """The session aiohttp-session saved under this cookie, or None."""
        name = self._record_name(token, namespace)
        if name is None:
            return None
        try:
            raw = await self._redis().get(name)
        except self._errors as exc:
            raise self._unavailable("GET", exc) from exc
        return None if raw is None else _legacy_session(raw, self._decoder, self._max_age)

    async def delete(self, token: str, *, namespace: str) -> None:
        """Delete the old record (``DEL``); idempotent."""
        name = self._record_name(token, namespace)
        if name is None:
            return
        try:
            await self._redis().delete(name)
        except self._errors as exc:
            raise self._unavailable("DEL", exc) from exc

    async def close(self) -> None:
        """Close the client if the reader made it from a URL."""
        if self._url is not None and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def __repr__(self) -> str:
        owner = "owned" if self._url is not None else "borrowed"
        return f"<AiohttpSessionRedis max_age={self._max_age!r} client={owner}>"


class AiohttpSessionMemcached(_KeyedReader):
    """Reads and deletes the records of aiohttp-session's ``MemcachedStorage``.

    ``client`` is the ``aiomcache.Client`` aiohttp-session used (borrowed: the application
    closes it). Records are ``{cookie_name}_{key}`` as for :class:`AiohttpSessionRedis`, with
    the same ``max_age``, ``decoder`` and ``key_pattern`` options.
    """

    _name = "AiohttpSessionMemcached"

    # _KeyedReader's options repeated, not **kwargs: the signature documents them.
    def __init__(
        self,
        client: aiomcache.Client,
        *,
        max_age: int | None = None,
        decoder: Callable[[str], Any] = json.loads,
        key_pattern: str | re.Pattern[str] = UUID4_HEX,
    ) -> None:
        super().__init__(max_age=max_age, decoder=decoder, key_pattern=key_pattern)
        try:
            import aiomcache
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "AiohttpSessionMemcached needs aiomcache: pip install aiomcache"
            ) from exc
        if not isinstance(client, aiomcache.Client):
            raise ConfigurationError(
                "AiohttpSessionMemcached needs the aiomcache.Client aiohttp-session's "
                f"MemcachedStorage used, not {type(client).__name__}"
            )
        self._client = client
        self._errors: tuple[type[BaseException], ...] = (
            OSError,
            aiomcache.exceptions.ClientException,
        )

    def _key(self, token: str, namespace: str) -> bytes | None:
        name = self._record_name(token, namespace)
        # memcached keys: at most 250 bytes, no spaces or control characters. A key the
        # pattern allowed but memcached would refuse cannot have been stored: no record.
        if name is None or len(name.encode()) > 250 or not name.isprintable() or " " in name:
            return None
        return name.encode()

    async def load(self, token: str, *, namespace: str) -> LegacySession | None:
        """The session aiohttp-session saved under this cookie, or None."""
        key = self._key(token, namespace)
        if key is None:
            return None
        try:
            raw = await self._client.get(key)
        except self._errors as exc:
            raise self._unavailable("get", exc) from exc
        if not isinstance(raw, bytes):
            return None
        return _legacy_session(raw, self._decoder, self._max_age)

    async def delete(self, token: str, *, namespace: str) -> None:
        """Delete the old record; idempotent."""
        key = self._key(token, namespace)
        if key is None:
            return
        try:
            await self._client.delete(key)
        except self._errors as exc:
            raise self._unavailable("delete", exc) from exc

    def __repr__(self) -> str:
        return f"<AiohttpSessionMemcached max_age={self._max_age!r}>"
