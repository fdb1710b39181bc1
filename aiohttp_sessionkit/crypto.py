"""The encrypted-cookie envelope: AES-256-GCM with a key ring.

Token layout, URL-safe base64 without padding::

    version (1 byte) | key id (3 bytes) | nonce (12 bytes) | ciphertext | GCM tag (16 bytes)

The version byte, the key id and the cookie name are authenticated as associated data, so
a token cannot be moved to another cookie name or relabelled to another key. The key id is
derived from the key itself, so opening never tries every key, and reordering the key list
does not invalidate cookies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .exceptions import ConfigurationError

__all__ = [
    "KEY_BYTES",
    "KeyRing",
    "b64url_decode_canonical",
    "b64url_encode",
    "generate_key",
    "parse_key",
]

KEY_BYTES = 32
_VERSION = b"\x01"
_KID_BYTES = 3
_NONCE_BYTES = 12
_TAG_BYTES = 16
_PREFIX = len(_VERSION) + _KID_BYTES
_MIN_TOKEN = _PREFIX + _NONCE_BYTES + _TAG_BYTES
_B64URL_CHARS = re.compile(r"[A-Za-z0-9_-]*")
# Unpadded base64 whose length is 2 (3) mod 4 ends in a character of which only the top 2 (4)
# bits encode data; RFC 4648 section 3.5 wants the rest zero. These are the characters that
# have them zero: any other last character is a second spelling of the same bytes.
_CANONICAL_LAST = ("", "", "AQgw", "AEIMQUYcgkosw048")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_HOW_TO = (
    "generate one with `python -m aiohttp_sessionkit keygen` or "
    "aiohttp_sessionkit.generate_key(), and keep it out of source control"
)

_UNSET = (
    "is the environment variable that should hold it (SESSION_KEY, say) set in this "
    "process? Give every process and host the same key, for example "
    'EncryptedCookieStore(os.environ["SESSION_KEY"]), with the key generated once by '
    "`python -m aiohttp_sessionkit keygen` and kept out of source control"
)
#: Distinct unknown key ids logged per key ring: a client can invent key ids at will.
_UNKNOWN_LOGGED = 32

log = logging.getLogger("aiohttp_sessionkit")

KeyLike = str | bytes | bytearray


def b64url_encode(data: bytes) -> str:
    """URL-safe base64 without padding (sealed cookies, JWT segments).

    binascii directly: base64.urlsafe_b64encode is two Python calls around it.
    """
    encoded = binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE)
    return encoded.rstrip(b"=").decode("ascii")


def b64url_decode_canonical(text: str) -> bytes | None:
    """Decode URL-safe base64 without padding, accepting only its canonical spelling.

    None for anything else: padding, characters outside the URL-safe alphabet, a length of
    1 mod 4, or non-zero unused bits in the last character (RFC 4648 section 3.5). So one
    value has one accepted spelling, the one :func:`b64url_encode` gives (the same result as
    decode, re-encode, compare, without the re-encode). For sealed cookies and JWT segments.
    """
    rest = len(text) % 4
    if rest == 1 or _B64URL_CHARS.fullmatch(text) is None:
        return None
    if rest and text[-1] not in _CANONICAL_LAST[rest]:
        return None
    try:  # binascii directly: base64.urlsafe_b64decode is three calls around it
        padded = (text + "=" * (4 - rest) if rest else text).encode("ascii")
        return binascii.a2b_base64(padded.translate(_FROM_URLSAFE), strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def generate_key() -> str:
    """A fresh random 32-byte key as URL-safe base64 text (safe for env vars and config)."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


def parse_key(key: KeyLike) -> bytes:
    """Turn a key given as 32 raw bytes or URL-safe/standard base64 text into 32 bytes.

    Base64 given as bytes (for example the output of ``Fernet.generate_key()``) is accepted
    too: 32 bytes are always raw, anything else must decode to exactly 32 bytes. 32 raw
    bytes that are all printable ASCII (``b'correct horse battery staple 123'``) are refused:
    that is a passphrase, not a key.
    """
    if isinstance(key, bytearray):
        key = bytes(key)
    if isinstance(key, bytes) and len(key) == KEY_BYTES:
        if all(0x20 <= byte <= 0x7E for byte in key):
            # Random bytes are all printable once in about 10**14 keys; a passphrase or a
            # 32-character password always is, and has far fewer than 256 bits.
            raise ConfigurationError(
                "the session key is 32 bytes of printable text (a passphrase or password?), "
                "not 32 random bytes; give base64 text of 32 random bytes instead, or raw "
                f"random bytes: {_HOW_TO}"
            )
        raw = key
    elif isinstance(key, (str, bytes)):
        text = key.decode("ascii", "replace") if isinstance(key, bytes) else key
        text = text.strip()
        try:
            raw = base64.b64decode(
                text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4),
                validate=True,
            )
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != KEY_BYTES:
            raise ConfigurationError(
                f"a session key must be {KEY_BYTES} random bytes, given raw or as base64 text "
                f"(got {_describe(key)}); {_HOW_TO}"
            )
    else:
        raise ConfigurationError(
            f"a session key must be str or bytes, not {type(key).__name__}; {_HOW_TO}"
        )
    if len(set(raw)) < 8:
        raise ConfigurationError(
            f"the session key looks like a placeholder, not random bytes; {_HOW_TO}"
        )
    return raw


def _describe(key: str | bytes) -> str:
    return f"{len(key)} {'characters' if isinstance(key, str) else 'bytes'}"


def _key_id(raw: bytes) -> bytes:
    return hashlib.sha256(b"aiohttp-sessionkit key id\x00" + raw).digest()[:_KID_BYTES]


class KeyRing:
    """Seals with the first key; opens with whichever listed key the token names."""

    __slots__ = ("_by_id", "_current", "_current_id", "_unknown")

    def __init__(self, keys: KeyLike | Iterable[KeyLike]) -> None:
        if keys is None:
            raise ConfigurationError(f"no session key given (None): {_UNSET}")
        if isinstance(keys, (str, bytes, bytearray)):
            key_list: Sequence[KeyLike] = [keys]
        else:
            key_list = list(keys)
        if not key_list:
            raise ConfigurationError(f"no session key given (an empty list): {_UNSET}")
        self._by_id: dict[bytes, AESGCM] = {}
        self._unknown: set[bytes] = set()
        for key in key_list:
            if key is None or (isinstance(key, (str, bytes, bytearray)) and not key.strip()):
                raise ConfigurationError(
                    f"a session key is {'None' if key is None else 'empty'}: {_UNSET}"
                )
            raw = parse_key(key)
            kid = _key_id(raw)
            if kid in self._by_id:
                raise ConfigurationError(
                    "the same session key is listed twice (or two keys share a key id); "
                    "list each key once"
                )
            self._by_id[kid] = AESGCM(raw)
        self._current_id = _VERSION + _key_id(parse_key(key_list[0]))
        self._current = self._by_id[self._current_id[1:]]

    def seal(self, plaintext: bytes, context: bytes) -> str:
        """Encrypt and authenticate ``plaintext``, bound to ``context`` (the cookie name)."""
        nonce = os.urandom(_NONCE_BYTES)
        prefix = self._current_id
        sealed = self._current.encrypt(nonce, plaintext, prefix + context)
        return b64url_encode(prefix + nonce + sealed)

    def open(self, token: str, context: bytes) -> tuple[bytes, bool] | None:
        """Return (plaintext, sealed with a retired key) or None if the token does not open."""
        raw = b64url_decode_canonical(token)  # one spelling per token
        if raw is None:
            return None
        if len(raw) < _MIN_TOKEN or raw[:1] != _VERSION:
            return None
        cipher = self._by_id.get(raw[1:_PREFIX])
        if cipher is None:
            self._log_unknown(raw[1:_PREFIX])
            return None
        try:
            plaintext = cipher.decrypt(
                raw[_PREFIX : _PREFIX + _NONCE_BYTES],
                raw[_PREFIX + _NONCE_BYTES :],
                raw[:_PREFIX] + context,
            )
        except InvalidTag:
            return None
        return plaintext, cipher is not self._current

    def _log_unknown(self, kid: bytes) -> None:
        """Say once per key id that a cookie was sealed under a key this process lacks: the
        sign of processes or hosts that were given different keys (each user is logged out
        whenever a request reaches another process). The key id only, never the token."""
        unknown = self._unknown
        if kid in unknown or len(unknown) > _UNKNOWN_LOGGED:
            return
        unknown.add(kid)
        if len(unknown) > _UNKNOWN_LOGGED:
            log.info("more cookies under unknown key ids; no longer logging them")
            return
        log.info(
            "a session cookie was sealed under key id %s, which is not one of this process's "
            "keys (%s; the first one seals); starting a new session. If every process should "
            "share its sessions, give them all the same keys (SESSION_KEY); logged once per "
            "key id",
            kid.hex(),
            ", ".join(k.hex() for k in self._by_id),
        )
