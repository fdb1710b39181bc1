"""EncryptedCookieStore: the session lives in the client, sealed with AES-256-GCM."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from ..abc import AbstractStore
from ..crypto import KeyLike, KeyRing
from ..exceptions import CookieTooLarge

__all__ = ["MAX_COOKIE_BYTES", "EncryptedCookieStore"]

#: Browsers drop a cookie whose name and value exceed this many bytes.
MAX_COOKIE_BYTES = 4096


class EncryptedCookieStore(AbstractStore):
    """Keeps the whole session in an encrypted, authenticated cookie; no server state.

    ``keys`` is one key or a list: the first seals, every listed key opens, so a key is
    rotated by putting a new one first and removing the old one once its cookies have
    expired. Cookies sealed with an older listed key are re-sealed with the first key on
    their next write.

    A client-side store cannot revoke: logging out deletes the browser's cookie, but a copy
    taken earlier keeps working until the session's idle or absolute timeout. Use a
    server-side store where that matters.
    """

    client_side: ClassVar[bool] = True
    local: ClassVar[bool] = True

    __slots__ = ("_ring",)

    def __init__(self, keys: KeyLike | Iterable[KeyLike]) -> None:
        self._ring = KeyRing(keys)

    async def load(self, token: str, *, namespace: str) -> bytes | None:
        if len(token) > MAX_COOKIE_BYTES:
            return None
        opened = self._ring.open(token, namespace.encode())
        return None if opened is None else opened[0]

    async def save(self, token: str | None, data: bytes, *, ttl: int, namespace: str) -> str | None:
        sealed = self._ring.seal(data, namespace.encode())
        size = len(namespace) + 1 + len(sealed)
        if size > MAX_COOKIE_BYTES:
            raise CookieTooLarge(size, MAX_COOKIE_BYTES)
        return sealed

    async def delete(self, token: str, *, namespace: str) -> None:
        """Nothing to delete on a server; the middleware expires the browser's cookie."""
