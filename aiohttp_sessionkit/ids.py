"""Session ids for server-side stores: generation, shape check, and the store key."""

from __future__ import annotations

import hashlib
import re
import secrets

from ._cache import VerifiedCache

__all__ = ["ID_BYTES", "is_valid_session_id", "key_for_token", "new_session_id", "record_key"]

#: Random bytes in a session id: 256 bits from ``secrets``.
ID_BYTES = 32
_ID_LENGTH = 43  # len(secrets.token_urlsafe(32)): unpadded URL-safe base64
# The last of 43 characters carries 2 bits that encode nothing: only the canonical spelling
# (those bits zero, as secrets.token_urlsafe writes them; RFC 4648 section 3.5) is an id.
_ID_SHAPE = re.compile(rf"[A-Za-z0-9_-]{{{_ID_LENGTH - 1}}}[AEIMQUYcgkosw048]")


def new_session_id() -> str:
    """A fresh, URL-safe session id with 256 bits of entropy."""
    return secrets.token_urlsafe(ID_BYTES)


def is_valid_session_id(value: str) -> bool:
    """True when ``value`` has the shape of an id we issue; checked before any store call."""
    return len(value) == _ID_LENGTH and _ID_SHAPE.fullmatch(value) is not None


def record_key(namespace: str, session_id: str) -> str:
    """The key a store files the session under: a hash, never the id itself.

    A leaked store dump or a store-side timing difference then yields nothing that works as
    a cookie. The namespace (the cookie name) is hashed in, so an id issued for one cookie
    name opens nothing under another. The key is SHA-256 of ``namespace NUL id``, as hex.
    """
    return hashlib.sha256(f"{namespace}\x00{session_id}".encode()).hexdigest()


def key_for_token(namespace: str, token: str) -> str | None:
    """The record key for a presented ``token``, or None when it is not an id we issue."""
    memo = _KEYS
    key = memo.get((namespace, token))
    if key is not None:
        return key
    if not is_valid_session_id(token):
        return None
    key = record_key(namespace, token)
    memo.remember((namespace, token), key)
    return key


# Record keys of recently presented ids, by (namespace, id): a browser presents the same id
# on every request, and a write asks for it twice (load, then save). A pure function's
# memo: a hit is the hash itself, and only well-formed ids are remembered. Bounded (about
# 1.5 MB when full); it holds live ids in process memory, as request handling does anyway,
# never in a store.
_KEYS: VerifiedCache[str] = VerifiedCache(4096)
