"""EncryptedCookieStore: the session lives in the client, sealed with AES-256-GCM."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar, NamedTuple

from .. import session as session_module
from .._cache import VerifiedCache
from ..abc import AbstractStore, ServerStore, mirrors
from ..cookies import MAX_COOKIE_BYTES
from ..crypto import KeyLike, KeyRing
from ..exceptions import ConfigurationError, CookieTooLarge
from ..ids import record_key
from ..serializers import Serializer
from ..session import Session, encode_payload
from . import _revocation

__all__ = ["MAX_COOKIE_BYTES", "EncryptedCookieStore"]

# Deny-list entries of ended cookie sessions, by cookie name and lineage id, apart from
# anything else the application keeps in the same server store.
_DENY_NAMESPACE = "aiohttp_sessionkit.cookie.revoked"

# What the session layer's payload starts with (session.py): version, created, last access,
# max_age, and from version 2 on the 8-byte lineage id.
_PAYLOAD_HEADER = struct.Struct(">BIIi")
_LINEAGE_VERSION = 2
_LINEAGE_BYTES = 8

# A session bound to a user (setup(..., user_key=...)) in a store with a deny list is sealed
# with a frame before its payload: this marker (no payload version is this large), since
# when the session is bound to that user under its lineage (epoch microseconds), the length
# of the user id and the user id as UTF-8. The deny list's per-user cutoff is checked
# against it without decoding the session's data.
_BOUND_MARKER = 0xB5
_BOUND_PREFIX = bytes([_BOUND_MARKER])
_BOUND_FRAME = struct.Struct(">BQH")


class _Bound(NamedTuple):
    """What ``dump`` hands to ``save`` for a session bound to a user: ``save`` frames it."""

    user: str
    payload: bytes


class _Cookie(NamedTuple):
    """An opened cookie, as a store with a deny list reads it."""

    payload: bytes  # what the session layer restores
    lineage: str  # its lineage id (hex); one derived from the cookie for a version 1 payload
    created: int
    user: str | None  # the user it is bound to, if any
    born: int  # when it became this user's session (epoch microseconds; _revocation.born)


class EncryptedCookieStore(_revocation.DenyListUsers, AbstractStore):
    """Keeps the whole session in an encrypted, authenticated cookie; no server state.

    ``keys`` is one key or a list: the first seals, every listed key opens, so a key is
    rotated by putting a new one first and removing the old one once its cookies have
    expired. Cookies sealed with an older listed key are re-sealed with the first key on
    their next write.

    ``cache_size`` (default 4096; 0 turns it off) bounds a cache of recently opened or
    sealed cookies, emptied when full: a browser presents the same cookie on every request
    until it changes, and a hit skips the AES-GCM open. Only cookies that opened with a
    listed key (or that this store sealed) are cached, keyed by the whole cookie value and
    the cookie name, so a hit is exactly as trustworthy as an open; expiry is still checked
    from the payload on every request. About 0.5 KB per entry for a ~100-byte session.

    Without ``revocation`` a client-side store cannot revoke: logging out deletes the
    browser's cookie, but a copy taken earlier keeps working until the session's idle or
    absolute timeout. Pass any server-side store (memory, Redis, PostgreSQL, MongoDB, SQL)
    as ``revocation`` and logout, ``regenerate()`` and ``new_session()`` put the session on
    a deny list there, which every request checks: one store read per request (a store that
    cannot be reached answers 503), and the session data still live in the cookie. With it
    the store can also end all sessions of a user (``setup(..., user_key=...)``) by a
    per-user cutoff time.
    """

    client_side: ClassVar[bool] = True
    local: ClassVar[bool] = True

    __slots__ = ("_absolute_timeout", "_opened", "_ring", "_user_key", "revocation")

    def __init__(
        self,
        keys: KeyLike | Iterable[KeyLike],
        *,
        cache_size: int = 4096,
        revocation: ServerStore | None = None,
    ) -> None:
        # (cookie name, cookie value) -> plaintext, for cookies that opened or that we sealed.
        self._opened: VerifiedCache[bytes] = VerifiedCache(cache_size)
        self._ring = KeyRing(keys)
        if revocation is not None and not isinstance(revocation, ServerStore):
            raise ConfigurationError(
                f"revocation={type(revocation).__name__}: give a server-side store "
                "(MemoryStore, RedisStore, PostgresStore, MongoStore, SQLAlchemyStore) or None"
            )
        #: The server store holding the deny list, or None (the store cannot revoke).
        self.revocation = revocation
        self._absolute_timeout = 0  # set_absolute_timeout(); 0: never set up
        self._user_key: str | None = None  # set_user_key()
        if revocation is not None:
            # Every load asks the deny list: not local, so the session layer awaits load()
            # and save() under its time budget instead of calling their synchronous twins.
            object.__setattr__(self, "local", False)

    # -- configuration ---------------------------------------------------------------------
    def set_user_key(self, user_key: str) -> None:
        """Bind sealed sessions to ``session[user_key]``, so a cutoff finds them (only with
        a deny list; ``setup`` refuses ``user_key`` without one)."""
        super().set_user_key(user_key)
        # The session layer takes an instance's own dump in place of the default (read once
        # at setup, after this hook): only a store that binds sessions pays for the frame.
        dump: Callable[[Session, Serializer, int], Any] = self._dump_bound
        object.__setattr__(self, "dump", dump)

    # -- lifecycle: the revocation store is ours to open and close --------------------------
    async def open(self) -> None:
        if self.revocation is not None:
            await self.revocation.open()

    async def close(self) -> None:
        if self.revocation is not None:
            await self.revocation.close()

    async def purge_expired(self) -> int:
        return 0 if self.revocation is None else await self.revocation.purge_expired()

    # -- the store contract ----------------------------------------------------------------
    async def load(self, token: str, *, namespace: str) -> bytes | None:
        revocation = self.revocation
        if revocation is None:
            return self.load_nowait(token, namespace)
        cookie = self._read(token, namespace)
        if cookie is None or await self._refused(revocation, cookie, namespace):
            return None
        return cookie.payload

    @mirrors(load)
    def load_nowait(self, token: str, namespace: str) -> bytes | None:
        # load() without its coroutine: the session layer calls this one (see abc.mirrors).
        key = (namespace, token)
        payload = self._opened.get(key)
        if payload is not None:
            return payload
        if len(token) > MAX_COOKIE_BYTES:
            return None
        opened = self._ring.open(token, namespace.encode())
        if opened is None:
            return None
        plaintext = opened[0]
        if self.revocation is None and plaintext[:1] == _BOUND_PREFIX:
            # Sealed by a store with a deny list (the application dropped it since): the
            # session opens without its user frame.
            frame = _frame(plaintext)
            if frame is None:
                return None
            plaintext = plaintext[frame[2] :]
        self._opened.remember(key, plaintext)
        return plaintext

    async def save(self, token: str | None, data: Any, *, ttl: int, namespace: str) -> str | None:
        revocation = self.revocation
        if revocation is None:
            return self.save_nowait(token, data, ttl, namespace)
        user, payload = (data.user, data.payload) if isinstance(data, _Bound) else (None, data)
        since = _revocation.binding_time()
        if token is not None:  # an update: of a session that must not have ended meanwhile
            old = self._read(token, namespace)
            if old is None or await self._refused(revocation, old, namespace):
                return None  # logged out (or cut off) while this request ran: never re-issue
            if user is not None and user == old.user and _lineage(payload) == old.lineage:
                since = old.born  # the same session of the same user: its binding stays
        if user is not None:
            name = user.encode()
            if len(name) > MAX_COOKIE_BYTES:
                raise CookieTooLarge(len(name), MAX_COOKIE_BYTES)
            payload = _BOUND_FRAME.pack(_BOUND_MARKER, since, len(name)) + name + payload
        else:
            payload = _escaped(payload)
        return self.save_nowait(token, payload, ttl, namespace)

    @mirrors(save)
    def save_nowait(self, token: str | None, data: bytes, ttl: int, namespace: str) -> str:
        # save() without its coroutine: the session layer calls this one (see abc.mirrors).
        # With a deny list, save() has framed (or escaped) the payload already.
        plaintext = data if self.revocation is not None else _escaped(data)
        sealed = self._ring.seal(plaintext, namespace.encode())
        size = len(namespace) + 1 + len(sealed)
        if size > MAX_COOKIE_BYTES:
            raise CookieTooLarge(size, MAX_COOKIE_BYTES)
        # The client presents this cookie next: remembering it now saves that request's open.
        self._opened.remember((namespace, sealed), data)
        return sealed

    async def delete(self, token: str, *, namespace: str) -> None:
        """Put the cookie's session on the deny list (with ``revocation``); else nothing: the
        middleware expires the browser's cookie.

        The entry is keyed by the session's lineage id, which every re-issue of the cookie
        keeps, and lasts until the session's creation plus the absolute timeout: no cookie of
        the session opens after that. A cookie that does not open puts nothing there.
        """
        revocation = self.revocation
        if revocation is None:
            return
        cookie = self._read(token, namespace)
        if cookie is None:
            return
        until = cookie.created + _revocation.lifetime(self._absolute_timeout)
        t = session_module.now()
        if until > t:
            await _revocation.keep_latest(
                revocation, self._deny_key(namespace, cookie.lineage), until, until - t
            )

    # -- a user's sessions (setup(..., user_key=...)), through the deny list ----------------
    def handle(self, token: str, *, namespace: str) -> str | None:
        """The non-secret handle of the cookie's session (a hash of its lineage id), or None
        without a deny list or when the cookie does not open."""
        if self.revocation is None:
            return None
        cookie = self._read(token, namespace)
        return None if cookie is None else self._deny_key(namespace, cookie.lineage)

    # -- inside --------------------------------------------------------------------------------
    def _dump_bound(self, session: Session, serializer: Serializer, accessed: int) -> Any:
        """:meth:`dump` of a store that binds sessions: the payload, with the user it is bound
        to (``session[user_key]``, a str or an int) for ``save`` to seal in front of it."""
        payload = encode_payload(session, serializer, accessed)
        assert self._user_key is not None  # this dump is installed by set_user_key
        user = _revocation.bound_user(session._data.get(self._user_key))
        return payload if user is None else _Bound(user, payload)

    def _read(self, token: str, namespace: str) -> _Cookie | None:
        """Open ``token`` (through the cache) and read what the deny list is checked against."""
        plaintext = self.load_nowait(token, namespace)
        if plaintext is None:
            return None
        user, since = None, None
        if plaintext[:1] == _BOUND_PREFIX:
            frame = _frame(plaintext)
            if frame is None:
                return None
            user, since, start = frame
            plaintext = plaintext[start:]
            if not user:  # an escape (see _escaped), not a binding
                user, since = None, None
        created, lineage = 0, None
        if len(plaintext) >= _PAYLOAD_HEADER.size:
            version, created, _, _ = _PAYLOAD_HEADER.unpack_from(plaintext)
            lineage = _lineage(plaintext)
            if lineage is None and version == 1:
                # Sealed before payloads carried a lineage id: name it after the cookie, and
                # hand the session layer the payload with that id, so that its re-issues
                # keep it and a logout with any of them ends this cookie too.
                lineage = hashlib.blake2b(token.encode(), digest_size=_LINEAGE_BYTES).hexdigest()
                plaintext = (
                    bytes([_LINEAGE_VERSION])
                    + plaintext[1 : _PAYLOAD_HEADER.size]
                    + bytes.fromhex(lineage)
                    + plaintext[_PAYLOAD_HEADER.size :]
                )
        if lineage is None:  # not a session payload at all: it will not restore either
            lineage = hashlib.blake2b(token.encode(), digest_size=_LINEAGE_BYTES).hexdigest()
        return _Cookie(plaintext, lineage, created, user, _revocation.born(created, since))

    def _refused(self, revocation: ServerStore, cookie: _Cookie, namespace: str) -> Awaitable[bool]:
        user = cookie.user
        return _revocation.refused(
            revocation,
            self._deny_key(namespace, cookie.lineage),
            None if user is None else _revocation.cutoff_key(namespace, user),
            cookie.born,
        )

    @staticmethod
    def _deny_key(namespace: str, lineage: str) -> str:
        return record_key(f"{_DENY_NAMESPACE}\x00{namespace}", lineage)


def _lineage(payload: bytes) -> str | None:
    """The lineage id a version 2 payload carries (hex), else None."""
    if len(payload) >= _PAYLOAD_HEADER.size + _LINEAGE_BYTES and payload[0] == _LINEAGE_VERSION:
        return payload[_PAYLOAD_HEADER.size : _PAYLOAD_HEADER.size + _LINEAGE_BYTES].hex()
    return None


def _escaped(payload: bytes) -> bytes:
    """``payload`` as sealed when no user frame goes before it: one that starts with the
    frame marker itself gets an empty frame (no user), so that opening the cookie gives it
    back whole. The session layer never writes one (its payloads start with their version);
    a store's contract is to return any payload as saved."""
    if payload[:1] == _BOUND_PREFIX:
        return _BOUND_FRAME.pack(_BOUND_MARKER, 0, 0) + payload
    return payload


def _frame(plaintext: bytes) -> tuple[str, int, int] | None:
    """(user, bound since, where the payload starts) of a bound session's frame; None when
    it is cut short or the user id is not UTF-8 (only we seal frames: never expected)."""
    if len(plaintext) < _BOUND_FRAME.size:
        return None
    _, since, length = _BOUND_FRAME.unpack_from(plaintext)
    start = _BOUND_FRAME.size + length
    if len(plaintext) < start:
        return None
    try:
        user = plaintext[_BOUND_FRAME.size : start].decode()
    except UnicodeDecodeError:
        return None
    return user, since, start
