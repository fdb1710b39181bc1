"""Session ids for server-side stores: generation, shape check, and the store key."""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = ["ID_BYTES", "is_valid_session_id", "key_for_token", "new_session_id", "record_key"]

#: Random bytes in a session id: 256 bits from ``secrets``.
ID_BYTES = 32
_ID_LENGTH = 43  # len(secrets.token_urlsafe(32)): unpadded URL-safe base64
_ID_SHAPE = re.compile(rf"[A-Za-z0-9_-]{{{_ID_LENGTH}}}")


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
    name opens nothing under another.
    """
    return hashlib.sha256(f"{namespace}\x00{session_id}".encode()).hexdigest()


def key_for_token(namespace: str, token: str) -> str | None:
    """The record key for a presented ``token``, or None when it is not an id we issue."""
    # is_valid_session_id and record_key, inlined: this runs on every request with a session.
    if len(token) != _ID_LENGTH or _ID_SHAPE.fullmatch(token) is None:
        return None
    return hashlib.sha256(f"{namespace}\x00{token}".encode()).hexdigest()
