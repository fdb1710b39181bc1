"""JWTStore's keys: preparing and checking them, their ``kid``, signing, and the JWKS.

Every key a store is given goes through :func:`prepare_key`, the one place that decides
what a usable key is; signatures and key handling come from PyJWT's algorithm
implementations and ``cryptography``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

try:
    from cryptography.hazmat.primitives.asymmetric.ec import (
        SECP256R1,
        EllipticCurvePrivateKey,
        EllipticCurvePublicKey,
    )
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
    from jwt.algorithms import Algorithm, get_default_algorithms, has_crypto
    from jwt.exceptions import InvalidKeyError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'JWTStore needs PyJWT with its crypto extra: pip install "aiohttp-sessionkit[jwt]"'
    ) from exc

from aiohttp import web

from ...crypto import b64url_encode
from ...exceptions import ConfigurationError
from .jose import _ECDSA_ORDERS, _JSON_SEPARATORS, _hmac_signer, _low_s

if TYPE_CHECKING:
    from .store import JWTStore

__all__ = ["ALGORITHMS", "jwks_handler"]

#: The algorithms a store can be configured with; a store accepts exactly one of them.
ALGORITHMS = ("HS256", "HS384", "HS512", "EdDSA", "ES256", "RS256")

# RFC 7518 section 3.2: an HMAC key at least as long as the hash output.
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_MIN_RSA_BITS = 2048

KeyInput = str | bytes | Any  # a secret, PEM text, or a cryptography key object


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    verify: Any  # what PyJWT's Algorithm.verify takes: a secret or a public key
    sign: Any | None  # a secret or private key, None for a public key
    jwk: dict[str, Any] | None  # the public JWK, None for HMAC secrets


def algorithm_for(name: str) -> Algorithm:
    """PyJWT's implementation of ``name``, one of :data:`ALGORITHMS`."""
    if name not in ALGORITHMS:
        raise ConfigurationError(f"algorithm={name!r}: choose one of {', '.join(ALGORITHMS)}")
    if not has_crypto:  # pragma: no cover - pyjwt[crypto] is the extra's requirement
        raise ImportError('JWTStore needs cryptography: pip install "aiohttp-sessionkit[jwt]"')
    return get_default_algorithms()[name]


def prepare_keys(keys: KeyInput | Sequence[KeyInput], algorithm: str) -> list[_Key]:
    """The store's keys, in the order given (the first signs); ConfigurationError when one
    is unusable, when there is none, or when one is listed twice."""
    listed: list[KeyInput] = list(keys) if isinstance(keys, list | tuple) else [keys]
    if not listed:
        raise ConfigurationError("keys=[]: give at least one key")
    prepared = [prepare_key(key, algorithm, position) for position, key in enumerate(listed)]
    if len({key.kid for key in prepared}) != len(prepared):
        raise ConfigurationError("keys: the same key is listed twice; list each key once")
    return prepared


def prepare_key(key: KeyInput, algorithm: str, position: int) -> _Key:
    """One key, checked for ``algorithm``: its ``kid``, what verifies, what signs (None for a
    public key) and its public JWK. ``position`` is its place in ``keys``, for messages."""
    where = f"keys[{position}]"
    implementation = get_default_algorithms()[algorithm]
    if algorithm in _HMAC_MIN_BYTES:
        return _prepare_secret(key, algorithm, implementation, where)
    try:
        prepared = implementation.prepare_key(key)
    except (InvalidKeyError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"{where}: not a usable {algorithm} key ({exc}); give PEM text or a "
            "cryptography key object"
        ) from exc
    public: Any
    if algorithm == "RS256":
        if not isinstance(prepared, RSAPrivateKey | RSAPublicKey):
            _wrong_key_type(where, algorithm, "an RSA key")
        if prepared.key_size < _MIN_RSA_BITS:
            raise ConfigurationError(
                f"{where}: a {prepared.key_size}-bit RSA key is too weak; use at least "
                f"{_MIN_RSA_BITS} bits (or EdDSA)"
            )
        public = prepared.public_key() if isinstance(prepared, RSAPrivateKey) else prepared
    elif algorithm == "ES256":
        if not isinstance(prepared, EllipticCurvePrivateKey | EllipticCurvePublicKey):
            _wrong_key_type(where, algorithm, "an EC key")
        if not isinstance(prepared.curve, SECP256R1):
            raise ConfigurationError(
                f"{where}: ES256 needs a P-256 (secp256r1) key, not {prepared.curve.name}"
            )
        public = (
            prepared.public_key() if isinstance(prepared, EllipticCurvePrivateKey) else prepared
        )
    else:  # EdDSA
        if not isinstance(prepared, Ed25519PrivateKey | Ed25519PublicKey):
            _wrong_key_type(where, algorithm, "an Ed25519 key")
        public = prepared.public_key() if isinstance(prepared, Ed25519PrivateKey) else prepared
    jwk: dict[str, Any] = dict(implementation.to_jwk(public, as_dict=True))
    kid = _thumbprint(jwk)
    jwk.update(kid=kid, alg=algorithm, use="sig")
    signer = None if prepared is public else prepared
    return _Key(kid=kid, verify=public, sign=signer, jwk=jwk)


def _prepare_secret(key: KeyInput, algorithm: str, implementation: Algorithm, where: str) -> _Key:
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, bytes):
        raise ConfigurationError(
            f"{where}: {algorithm} takes a secret as bytes or str, not {type(key).__name__}"
        )
    minimum = _HMAC_MIN_BYTES[algorithm]
    if len(key) < minimum:
        raise ConfigurationError(
            f"{where}: a {len(key)}-byte secret is too short for {algorithm}; use at "
            f"least {minimum} random bytes, for example secrets.token_bytes({minimum})"
        )
    try:
        secret = implementation.prepare_key(key)
    except InvalidKeyError as exc:
        # PyJWT refuses PEM/SSH keys as HMAC secrets: the key-confusion attack's setup.
        raise ConfigurationError(
            f"{where}: this looks like an asymmetric key, not an HMAC secret; use "
            "algorithm='EdDSA', 'ES256' or 'RS256' with it"
        ) from exc
    kid = _thumbprint({"kty": "oct", "k": b64url_encode(secret)})
    return _Key(kid=kid, verify=secret, sign=secret, jwk=None)


def _wrong_key_type(where: str, algorithm: str, wanted: str) -> NoReturn:
    raise ConfigurationError(f"{where}: {algorithm} needs {wanted}")


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256): every process derives the same ``kid`` from a key."""
    required = {
        "RSA": ("e", "kty", "n"),
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
    }
    members = {name: jwk[name] for name in required.get(jwk["kty"], ("k", "kty"))}
    canonical = json.dumps(members, separators=_JSON_SEPARATORS, sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode()).digest())


def signing_function(signer: _Key | None, algorithm: str) -> Callable[[bytes], bytes] | None:
    """Signs with ``signer`` (None: the store only verifies): PyJWT's algorithm, in the
    low-S form for ECDSA, or for HMAC :func:`_hmac_signer`."""
    if signer is None:
        return None
    if algorithm in _HMAC_MIN_BYTES:
        secret = signer.sign
        assert isinstance(secret, bytes)  # _prepare_secret made it
        return _hmac_signer(secret, "sha" + algorithm[2:])
    implementation, key = get_default_algorithms()[algorithm], signer.sign
    order = _ECDSA_ORDERS.get(algorithm)

    def sign(message: bytes) -> bytes:
        signature = bytes(implementation.sign(message, key))
        return signature if order is None else _low_s(signature, order)

    return sign


def key_set(keys: Sequence[_Key], algorithm: str) -> dict[str, Any]:
    """The JSON Web Key Set of ``keys``; ConfigurationError for HMAC algorithms."""
    if algorithm in _HMAC_MIN_BYTES:
        raise ConfigurationError(
            f"{algorithm} keys are shared secrets and must never be published; a "
            "JWKS needs an asymmetric algorithm (EdDSA, ES256 or RS256)"
        )
    return {"keys": [dict(key.jwk) for key in keys if key.jwk is not None]}


def jwks_handler(store: JWTStore) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler serving ``store.jwks()``; raises ConfigurationError for HS* stores.

    The key set is read once, here: a rotation means a new store, hence a new handler.
    """
    body = json.dumps(store.jwks(), separators=_JSON_SEPARATORS)

    async def jwks(request: web.Request) -> web.Response:
        return web.Response(
            text=body,
            content_type="application/jwk-set+json",
            headers={"Cache-Control": "public, max-age=300"},
        )

    return jwks
