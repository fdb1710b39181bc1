"""Strict JOSE parsing (RFC 7515, RFC 7519) and the claim checks that do not use the clock.

The parsing is ours, not PyJWT's decoder, because a session must refuse more than it does
(duplicate members, non-canonical base64, oversized tokens) and must never raise on bad
input: every function here answers None for anything it does not accept. Also here: the
JSON encoder the package shares, the HMAC signer and the low-S form of ECDSA
signatures.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from ...cookies import DEFAULT_COOKIE_NAME
from ...crypto import b64url_encode
from ...serializers import check_depth

__all__ = ["MAX_TOKEN_BYTES", "PRIVATE_CLAIM", "RESERVED_CLAIMS", "SESSION_TYPE"]

#: A longer token is refused unread (and never issued): most servers cap a request header
#: near 8 KB, and parsing an unbounded attacker-chosen blob costs CPU for nothing.
MAX_TOKEN_BYTES = 8192
#: The private claim holding the session's bookkeeping (see the package docstring).
PRIVATE_CLAIM = "_sk"
#: Claims the library sets itself; a handler that sets one gets a ValueError.
RESERVED_CLAIMS = frozenset({"exp", "iat", "nbf", "jti", "iss", "aud", PRIVATE_CLAIM})
#: The header ``typ`` of a session token (RFC 8725 section 3.11). Media types compare
#: without case, and RFC 7515 lets the "application/" prefix be left out.
SESSION_TYPE = "session+jwt"
_SESSION_TYPES = frozenset({SESSION_TYPE, "application/" + SESSION_TYPE})
# What a JWT without a more precise type says (RFC 7519 section 5.1), or nothing at all.
_UNTYPED = frozenset({None, "jwt", "application/jwt"})

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_JSON_SEPARATORS = (",", ":")


# The group orders of the ECDSA curves (SEC 2): (r, s) and (r, n - s) both verify. We sign
# in the low-S form (s <= n/2) and accept both, because common issuers (PyJWT among them) do
# not normalize s and would see about half of their tokens refused; the two spellings of one
# token share its deny-list entry, which names a token by jti or by what the signature covers.
_ECDSA_ORDERS = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    "ES512": int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7F"
        "CC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}


def _high_s(signature: bytes, order: int) -> bool:
    """True for an ECDSA signature (r || s, RFC 7518 section 3.4) whose s is over n/2."""
    half = len(signature) // 2
    return int.from_bytes(signature[half:], "big") > order // 2


def _low_s(signature: bytes, order: int) -> bytes:
    """The low-S form of an ECDSA signature: (r, n - s) when s is over n/2."""
    if not _high_s(signature, order):
        return signature
    half = len(signature) // 2
    return signature[:half] + (order - int.from_bytes(signature[half:], "big")).to_bytes(
        half, "big"
    )


def _hmac_signer(secret: bytes, hash_name: str) -> Callable[[bytes], bytes]:
    """HMAC (RFC 2104) keyed once: each token copies the keyed state (``hmac.HMAC.copy``)
    instead of keying a new one, as ``hmac.digest`` does on every call. Verification still
    goes through PyJWT (constant-time comparison)."""
    keyed = hmac.new(secret, digestmod=hash_name)

    def sign(message: bytes) -> bytes:
        mac = keyed.copy()
        mac.update(message)
        return mac.digest()

    return sign


def _random_id() -> str:
    """128 random bits, base64url: a lineage id or a ``jti``."""
    return b64url_encode(os.urandom(16))


def _b64decode(segment: str) -> bytes | None:
    """Strict base64url without padding; None for anything else (including odd encodings)."""
    if len(segment) % 4 == 1 or _B64URL.fullmatch(segment) is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None
    # Unused low bits of the last character must be zero: otherwise several encodings map to
    # one value, and a "tampered" token would still verify.
    return raw if b64url_encode(raw) == segment else None


class _Duplicate(ValueError):
    pass


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # RFC 7519 allows rejecting duplicates; accepting the last one lets two parsers
        # disagree on what a token says.
        raise _Duplicate("duplicate member")
    return result


def _no_constants(name: str) -> NoReturn:
    # NaN and Infinity are not JSON (RFC 8259); Python's parser accepts them by default.
    raise ValueError(f"{name} is not JSON")


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        # UTF-8 only (RFC 8259 section 8.1; json.loads would guess UTF-16 or UTF-32 too),
        # and no deeper than the library's one limit, checked before the parser recurses.
        text = check_depth(raw.decode("utf-8"))
        value = json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constants)
    except (ValueError, RecursionError):  # JSONDecodeError, _Duplicate, bad UTF-8, too deep
        return None
    return value if isinstance(value, dict) else None


# One encoder for the module: json.dumps() with options builds a new encoder on every call.
# ASCII output: lone surrogates and the like travel as escapes every decoder accepts.
_dumps = json.JSONEncoder(separators=_JSON_SEPARATORS, allow_nan=False).encode


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_timestamp(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a call per field
class _Verified:
    """What a token says once its signature and its claims checked out, except for the checks
    that depend on the clock (``exp``, ``nbf``, ``iat``): the cache of verified tokens keeps
    these, so a token presented again is only checked against the clock."""

    data_json: str  # the non-registered claims, as a JSON object
    flashes_json: str | None  # the queued flash messages, as a JSON array, if any
    sid: str  # the lineage id (a token minted elsewhere: its jti, or a hash of it)
    exp: int | float
    nbf: int | float | None
    iat: int | float
    # From our private claim; None for a token minted elsewhere.
    created: int | None
    accessed: int | None
    max_age: int | None
    # Since when (epoch microseconds) the session is bound to the user in its data
    # (setup(..., user_key=...)), if it is: what a per-user cutoff is checked against.
    bound: int | None = None


def parse_header(header_b64: str, algorithm: str, accept_untyped: bool) -> dict[str, Any] | None:
    """The protected header if this store may verify the token it heads, else None.

    The caller picks the key by the header's ``kid``.
    """
    raw = _b64decode(header_b64)
    header = None if raw is None else _json_object(raw)
    # Exactly the configured algorithm: never "none", never a key type the token picks.
    if header is None or header.get("alg") != algorithm:
        return None
    if "crit" in header or "b64" in header:  # extensions we do not implement
        return None
    typ = header.get("typ")
    if typ is not None and not isinstance(typ, str):
        return None
    typ = None if typ is None else typ.lower()
    if typ not in _SESSION_TYPES and not (accept_untyped and typ in _UNTYPED):
        return None  # a JWT made for another purpose, or one that does not say
    return header


def check_claims(
    claims: dict[str, Any],
    token: str,
    namespace: str,
    issuer: str | None,
    audience: str | None,
) -> _Verified | None:
    """Every check of the claims that does not depend on the clock; None when one fails.

    Takes the registered claims and the private claim out of ``claims``: what is left is the
    session's data. The clock checks run on every load (JWTStore._open); these results are
    cached with the token.
    """
    exp = claims.pop("exp", None)
    # A token without exp would never expire: a session always has one.
    if not _is_number(exp):
        return None
    nbf = claims.pop("nbf", None)
    if nbf is not None and not _is_number(nbf):
        return None
    iat = claims.pop("iat", None)
    # Without iat nothing says when the session began: no timeout could ever end it.
    if not _is_number(iat):
        return None
    iss = claims.pop("iss", None)
    if issuer is not None and iss != issuer:
        return None
    aud = claims.pop("aud", None)
    if aud is not None or audience is not None:
        # RFC 7519 4.1.3: a token meant for an audience is refused by anyone who is not it.
        if audience is None:
            return None
        if aud != audience and not (isinstance(aud, list) and audience in aud):
            return None
    jti = claims.pop("jti", None)
    if jti is not None and not isinstance(jti, str):
        return None
    private = claims.pop(PRIVATE_CLAIM, None)
    if private is None:
        # Minted elsewhere. Like a token of ours without "n", it is bound to the default
        # session name: another name needs the private claim with "n".
        if namespace != DEFAULT_COOKIE_NAME:
            return None
        # Its jti names it on the deny list, else a hash of what the signature covers:
        # never of the signature, which can have other spellings that verify.
        signing_input = token[: token.rindex(".")]
        sid = jti or b64url_encode(hashlib.sha256(signing_input.encode()).digest()[:16])
        return _Verified(_dumps(claims), None, sid, exp, nbf, iat, None, None, None)
    # A token we issued opens only under the name it was issued for.
    if not _valid_private(private) or private.get("n", DEFAULT_COOKIE_NAME) != namespace:
        return None
    flashes = private.get("f")
    return _Verified(
        _dumps(claims),
        _dumps(flashes) if flashes else None,
        private["s"],
        exp,
        nbf,
        iat,
        private["c"],
        private["a"],
        private.get("m"),
        private.get("b"),
    )


def _valid_private(private: Any) -> bool:
    if not isinstance(private, dict) or not isinstance(private.get("s"), str):
        return False
    if not isinstance(private.get("n", ""), str):
        return False
    if not _is_timestamp(private.get("c")) or not _is_timestamp(private.get("a")):
        return False
    max_age = private.get("m")
    if max_age is not None and (not _is_timestamp(max_age) or not 0 < max_age < 2**31):
        return False
    bound = private.get("b")
    if bound is not None and (
        not isinstance(bound, int) or isinstance(bound, bool) or not 0 <= bound < 2**63
    ):
        return False
    return isinstance(private.get("f", []), list)
