"""A JSON Web Key Set (RFC 7517) as the keys of a verify-only JWTStore.

A verifier is usually given what the issuer publishes at ``/.well-known/jwks.json``: a
document ``{"keys": [JWK, ...]}``. :func:`keys_from_jwks` keeps the keys that fit the
store's one algorithm and turns them into ``cryptography`` public keys, which the store then
prepares like any other key. The document is parsed strictly: it is configuration, so a
mistake fails at construction with a message, never per request.

Following a JWKS URL (fetching it, refreshing it, refetching on an unknown ``kid``) is not
done here: fetch the document yourself and build the store from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    from jwt.algorithms import get_default_algorithms
    from jwt.exceptions import InvalidKeyError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'JWTStore needs PyJWT with its crypto extra: pip install "aiohttp-sessionkit[jwt]"'
    ) from exc

from ...exceptions import ConfigurationError

__all__ = ["keys_from_jwks"]

#: The key type (``kty``) and, where there is one, curve (``crv``) each algorithm verifies.
_KEY_TYPES = {
    "EdDSA": ("OKP", "Ed25519"),
    "ES256": ("EC", "P-256"),
    "RS256": ("RSA", None),
}
#: Members that only a private (or secret) key has: a published set must not hold them.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: A JWKS bigger than this is not a key set anyone publishes: refuse it unread.
MAX_KEYS = 64


def keys_from_jwks(document: Mapping[str, Any], algorithm: str) -> list[tuple[Any, str | None]]:
    """The public keys of ``document`` that verify ``algorithm``, each with its ``kid``.

    A JWK is skipped when its ``kty``/``crv`` does not fit the algorithm, its ``alg`` names
    another algorithm, or its ``use`` is not ``"sig"``: an issuer may publish keys for other
    purposes. A JWK with private members, a malformed document, or a set with no usable key
    raises :class:`~aiohttp_sessionkit.ConfigurationError`.
    """
    if algorithm not in _KEY_TYPES:
        raise ConfigurationError(
            f"a JWKS holds public keys; {algorithm} needs a shared secret (give the secret, "
            "never publish it), or use EdDSA, ES256 or RS256"
        )
    listed = document.get("keys")
    if not isinstance(listed, list) or not listed:
        raise ConfigurationError(
            'keys: a JWKS document is {"keys": [JWK, ...]} with at least one key'
        )
    if len(listed) > MAX_KEYS:
        raise ConfigurationError(f"keys: a JWKS of {len(listed)} keys; at most {MAX_KEYS}")
    kty, crv = _KEY_TYPES[algorithm]
    verifier = get_default_algorithms()[algorithm]
    found: list[tuple[Any, str | None]] = []
    skipped: list[str] = []
    for position, jwk in enumerate(listed):
        where = f"keys[{position}]"
        if not isinstance(jwk, Mapping) or not all(isinstance(name, str) for name in jwk):
            raise ConfigurationError(f"{where}: a JWK is a JSON object")
        private = sorted(_PRIVATE_MEMBERS & set(jwk))
        if private:
            raise ConfigurationError(
                f"{where}: holds private key material ({', '.join(private)}); a verifier "
                "needs only the public keys the issuer publishes"
            )
        kid = jwk.get("kid")
        if kid is not None and (not isinstance(kid, str) or not kid):
            raise ConfigurationError(f"{where}: kid must be a non-empty string")
        if (
            jwk.get("kty") != kty
            or (crv is not None and jwk.get("crv") != crv)
            or jwk.get("alg", algorithm) != algorithm
            or jwk.get("use", "sig") != "sig"
        ):
            skipped.append(f"{jwk.get('kty')}/{jwk.get('crv') or jwk.get('alg') or '-'}")
            continue
        try:
            key = verifier.from_jwk(dict(jwk))
        except (InvalidKeyError, ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(f"{where}: not a usable {algorithm} JWK ({exc})") from exc
        found.append((key, kid))
    if not found:
        raise ConfigurationError(
            f"keys: the JWKS has no {algorithm} signing key ({kty}"
            + (f" {crv}" if crv else "")
            + f"); it lists {', '.join(skipped)}"
        )
    return found
