"""EncryptedCookieStore: the session lives in the client, sealed with AES-256-GCM."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from .._cache import VerifiedCache
from ..abc import AbstractStore, mirrors
from ..cookies import MAX_COOKIE_BYTES
from ..crypto import KeyLike, KeyRing
from ..exceptions import CookieTooLarge

__all__ = ["MAX_COOKIE_BYTES", "EncryptedCookieStore"]


class EncryptedCookieStore(AbstractStore):
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

    A client-side store cannot revoke: logging out deletes the browser's cookie, but a copy
    taken earlier keeps working until the session's idle or absolute timeout. Use a
    server-side store where that matters.
    """

    client_side: ClassVar[bool] = True
    local: ClassVar[bool] = True

    __slots__ = ("_opened", "_ring")

    def __init__(self, keys: KeyLike | Iterable[KeyLike], *, cache_size: int = 4096) -> None:
        # (cookie name, cookie value) -> payload, for cookies that opened or that we sealed.
        self._opened: VerifiedCache[bytes] = VerifiedCache(cache_size)
        self._ring = KeyRing(keys)

    async def load(self, token: str, *, namespace: str) -> bytes | None:
        return self.load_nowait(token, namespace)

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
        self._opened.remember(key, opened[0])
        return opened[0]

    async def save(self, token: str | None, data: bytes, *, ttl: int, namespace: str) -> str | None:
        return self.save_nowait(token, data, ttl, namespace)

    @mirrors(save)
    def save_nowait(self, token: str | None, data: bytes, ttl: int, namespace: str) -> str:
        # save() without its coroutine: the session layer calls this one (see abc.mirrors).
        sealed = self._ring.seal(data, namespace.encode())
        size = len(namespace) + 1 + len(sealed)
        if size > MAX_COOKIE_BYTES:
            raise CookieTooLarge(size, MAX_COOKIE_BYTES)
        # The client presents this cookie next: remembering it now saves that request's open.
        self._opened.remember((namespace, sealed), data)
        return sealed

    async def delete(self, token: str, *, namespace: str) -> None:
        """Nothing to delete on a server; the middleware expires the browser's cookie."""
