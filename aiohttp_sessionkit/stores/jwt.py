"""JWTStore: the session as a signed JSON Web Token that other services can verify.

The token is a standard compact JWS (RFC 7515) whose claims are the session's data, at the
top level, so any JWT library reads ``sub``, ``roles`` and the rest. The library owns the
registered claims ``exp``, ``iat``, ``nbf``, ``jti``, ``iss`` and ``aud``, and keeps the
session's bookkeeping in one private claim, ``_sk``, an object with these members:

* ``s``: the session lineage id. It stays the same across the re-issues of one session (each
  write issues a new token) and changes on a new session, ``regenerate()`` or a login. The
  deny list used for revocation is keyed by it.
* ``c``: when the session was created; ``a``: when it was last written (epoch seconds).
* ``m``: the per-session ``max_age`` in seconds, present only when set.
* ``f``: queued flash messages, present only when there are some.
* ``n``: the cookie name (session namespace) the token was issued under, present only when
  it is not the default: a token opens only under the name it was issued for.

Signatures and keys come from PyJWT's algorithm implementations; the parsing and the claim
checks are ours, because a session must refuse more than PyJWT's decoder does (duplicate
members, non-canonical signatures, oversized tokens) and must never raise on bad input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, NoReturn

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

from .. import session as session_module
from .._cache import VerifiedCache
from ..abc import AbstractStore, ServerStore
from ..cookies import DEFAULT_COOKIE_NAME
from ..crypto import b64url_encode
from ..exceptions import ConfigurationError, SerializationError, SessionError
from ..ids import record_key
from ..serializers import Serializer
from ..session import Session

__all__ = [
    "ALGORITHMS",
    "MAX_TOKEN_BYTES",
    "PRIVATE_CLAIM",
    "RESERVED_CLAIMS",
    "JWTSession",
    "JWTStore",
    "ReadOnlySession",
    "ReadOnlySessionError",
    "jwks_handler",
]

#: The algorithms a store can be configured with; a store accepts exactly one of them.
ALGORITHMS = ("HS256", "HS384", "HS512", "EdDSA", "ES256", "RS256")
#: A longer token is refused unread (and never issued): most servers cap a request header
#: near 8 KB, and parsing an unbounded attacker-chosen blob costs CPU for nothing.
MAX_TOKEN_BYTES = 8192
#: The private claim holding the session's bookkeeping (see the module docstring).
PRIVATE_CLAIM = "_sk"
#: Claims the library sets itself; a handler that sets one gets a ValueError.
RESERVED_CLAIMS = frozenset({"exp", "iat", "nbf", "jti", "iss", "aud", PRIVATE_CLAIM})

# RFC 7518 section 3.2: an HMAC key at least as long as the hash output.
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_MIN_RSA_BITS = 2048
# A created/last-access time this far in the future is a forgery or a broken clock (as for
# the binary payload of the other stores).
_CLOCK_SKEW = 60
# The deny list shares a server store with nothing else of ours, but a fixed namespace keeps
# its keys apart from session records if the application reuses one store for both. It is
# the same for every cookie name: a JWT does not say which name it was issued under, so a
# revocation must hold wherever the token is presented.
_DENY_NAMESPACE = "aiohttp_sessionkit.jwt.revoked"
_DENIED = b"revoked"
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_JSON_SEPARATORS = (",", ":")


class ReadOnlySessionError(SessionError, RuntimeError):
    """A session of a store that holds only public keys was asked to change."""


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _hmac_signer(secret: bytes, hash_name: str) -> Callable[[bytes], bytes]:
    """HMAC (RFC 2104) with the keyed inner and outer hash states computed once.

    ``hmac.digest`` gives the same result, but with OpenSSL 3 it looks the algorithm up and
    keys a new context on every call: measured under Valgrind, 32,000 instructions per
    token, 7% of a loaded server's work on a write. Copying two prepared SHA-2 states is a
    third of that. Verification still goes through PyJWT (constant-time comparison); the
    tests check this signer against ``hmac.digest`` and PyJWT for every key length.
    """
    new = getattr(hashlib, hash_name)
    block = new().block_size
    if len(secret) > block:  # RFC 2104: a key longer than the block is hashed first
        secret = new(secret).digest()
    secret = secret.ljust(block, b"\0")
    inner, outer = new(secret.translate(_IPAD)), new(secret.translate(_OPAD))

    def sign(message: bytes) -> bytes:
        step = inner.copy()
        step.update(message)
        final = outer.copy()
        final.update(step.digest())
        return final.digest()  # type: ignore[no-any-return]

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
        value = json.loads(raw, object_pairs_hook=_unique_members, parse_constant=_no_constants)
    except (ValueError, RecursionError):  # JSONDecodeError, _Duplicate, bad UTF-8
        return None
    return value if isinstance(value, dict) else None


# One encoder and one decoder for the module: json.dumps() with options builds a new encoder
# on every call. ASCII output: lone surrogates and the like travel as escapes every decoder
# accepts.
_dumps = json.JSONEncoder(separators=_JSON_SEPARATORS, allow_nan=False).encode
# The decoder's C scanner, for JSON this module wrote itself (a verified token's data, kept
# in the cache): JSONDecoder.decode wraps it in two Python calls and a regular expression.
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
# A str as a JSON string, the C function JSONEncoder.encode calls for one.
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_timestamp(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32


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


# -- the session classes the store hands to the session layer ----------------------------------


class JWTSession(Session):
    """A session whose data are the claims of a JWT.

    Setting a claim the library owns (``exp``, ``iat``, ``nbf``, ``jti``, ``iss``, ``aud``,
    ``_sk``) raises ``ValueError`` naming it, so a handler cannot forge its own expiry.
    """

    __slots__ = ("_sid",)

    def __init__(self, identity: str | None = None, **kwargs: Any) -> None:
        super().__init__(identity, **kwargs)
        self._sid: str | None = None
        for key in self._data:
            _check_claim_name(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(key, str):
            _check_claim_name(key)
        super().__setitem__(key, value)


def _check_claim_name(key: str) -> None:
    if key in RESERVED_CLAIMS:
        raise ValueError(
            f"session[{key!r}]: {key!r} is a claim the session library sets itself "
            f"(reserved: {', '.join(sorted(RESERVED_CLAIMS))}); use another key"
        )


def _read_only(action: str) -> NoReturn:
    raise ReadOnlySessionError(
        f"cannot {action}: this JWTStore holds only public keys, so it can verify tokens but "
        "not issue them; change the session in the service that holds the private key"
    )


class ReadOnlySession(JWTSession):
    """The session of a verify-only :class:`JWTStore`: any change raises ReadOnlySessionError."""

    __slots__ = ()

    def __setitem__(self, key: str, value: Any) -> None:
        _read_only(f"set session[{key!r}]")

    def __delitem__(self, key: str) -> None:
        _read_only(f"delete session[{key!r}]")

    def clear(self) -> None:
        if self._data:
            _read_only("clear the session")

    def changed(self) -> None:
        _read_only("mark the session changed")

    def invalidate(self) -> None:
        _read_only("invalidate the session")

    def regenerate(self) -> None:
        _read_only("regenerate the session")

    def flash(self, value: Any) -> None:
        _read_only("queue a flash message")

    def pop_flashes(self) -> list[Any]:
        if self._flashes:
            _read_only("pop flash messages")
        return []

    @property
    def max_age(self) -> int | None:
        """This session's lifetime in seconds; read-only here."""
        return self._max_age

    @max_age.setter
    def max_age(self, value: int | None) -> None:
        _read_only("change max_age")


# -- what load() and dump() hand over ------------------------------------------------------------


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
    iat: int | float | None
    # From our private claim; None for a token minted elsewhere.
    created: int | None
    accessed: int | None
    max_age: int | None


class _Opened(NamedTuple):
    """A token valid now: what ``load`` returns and ``restore`` turns into a session. The
    data and flashes are fresh objects on every load, so a session changed in place never
    changes the cache. Built with ``tuple.__new__`` (see _open): no Python call."""

    data: dict[str, Any]
    flashes: list[Any]
    verified: _Verified
    now: int  # the clock when the token was checked; restore() uses the same reading


_new_tuple = tuple.__new__


@dataclass(slots=True)
class _Draft:
    """What ``dump`` hands to ``save``: the claims, already JSON, waiting for exp/iat/jti."""

    body: str  # the session data as a JSON object
    private: str  # the private claim without its lineage id, as a JSON object
    sid: str | None  # the lineage the session was loaded from
    flashes: str | None  # the flash messages as a JSON array, if any
    created: int
    accessed: int
    max_age: int | None


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    verify: Any  # what PyJWT's Algorithm.verify takes: a secret or a public key
    sign: Any | None  # a secret or private key, None for a public key
    jwk: dict[str, Any] | None  # the public JWK, None for HMAC secrets


KeyInput = str | bytes | Any  # a secret, PEM text, or a cryptography key object


class JWTStore(AbstractStore):
    """Sessions as signed JWTs: the token is the session, readable by other services.

    ``keys`` is one key or a list: the first signs, every listed key verifies, and each token
    names its key with ``kid`` (the RFC 7638 thumbprint of the key), so a key is rotated by
    listing a new one second (it shows up in :meth:`jwks` first), then first, then removing
    the old one once its tokens have expired. A token without ``kid`` is checked against the
    first key. HMAC secrets (HS256/384/512) are ``bytes`` or ``str`` of at least 32/48/64
    bytes; asymmetric keys are PEM text or ``cryptography`` key objects. A store whose first
    key is a public key is read-only: it verifies tokens and raises ReadOnlySessionError on
    any change. A verifier may be given the issuer's JSON Web Key Set instead, as a dict
    (``{"keys": [...]}``): its keys for ``algorithm`` verify, under their own ``kid`` too.

    Without ``revocation`` a JWT cannot be revoked: logout drops the client's copy, but a
    copy taken earlier opens until its ``exp``. Keep ``max_age`` short, or pass any
    server-side store (memory, Redis, PostgreSQL, MongoDB) as ``revocation``: logout,
    ``regenerate()`` and ``new_session()`` then put the session on a deny list there, which
    every request checks (a store that cannot be reached answers 503).
    """

    client_side: ClassVar[bool] = True
    session_class: ClassVar[type[Session]] = JWTSession

    def __init__(
        self,
        keys: KeyInput | Sequence[KeyInput],
        *,
        algorithm: str = "HS256",
        issuer: str | None = None,
        audience: str | None = None,
        leeway: int = 0,
        revocation: ServerStore | None = None,
        cache_size: int = 4096,
    ) -> None:
        # (session name, token) -> the payload JSON of a token whose signature and shape
        # were verified (or that this store signed): see _open.
        self._verified: VerifiedCache[_Verified] = VerifiedCache(cache_size)
        if algorithm not in ALGORITHMS:
            raise ConfigurationError(
                f"algorithm={algorithm!r}: choose one of {', '.join(ALGORITHMS)}"
            )
        if not has_crypto:  # pragma: no cover - pyjwt[crypto] is the extra's requirement
            raise ImportError('JWTStore needs cryptography: pip install "aiohttp-sessionkit[jwt]"')
        if isinstance(leeway, bool) or not isinstance(leeway, int) or not 0 <= leeway <= 3600:
            raise ConfigurationError(f"leeway={leeway!r}: give whole seconds from 0 to 3600")
        for name, value in (("issuer", issuer), ("audience", audience)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"{name}={value!r}: give a non-empty string or None")
        if revocation is not None and not isinstance(revocation, ServerStore):
            raise ConfigurationError(
                f"revocation={type(revocation).__name__}: give a server-side store "
                "(MemoryStore, RedisStore, PostgresStore, MongoStore) or None"
            )
        self.algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.revocation = revocation
        self._algorithm: Algorithm = get_default_algorithms()[algorithm]
        listed: list[KeyInput] = list(keys) if isinstance(keys, list | tuple) else [keys]
        published: list[str | None] = []  # the kids a JWKS gives its keys (stores/jwks.py)
        if isinstance(keys, Mapping):
            from .jwks import keys_from_jwks

            listed, published = map(list, zip(*keys_from_jwks(keys, algorithm), strict=True))
        if not listed:
            raise ConfigurationError("keys=[]: give at least one key")
        self._keys = [self._prepare(key, position) for position, key in enumerate(listed)]
        self._by_kid = {key.kid: key for key in self._keys}
        if len(self._by_kid) != len(self._keys):
            raise ConfigurationError("keys: the same key is listed twice; list each key once")
        for key, kid in zip(self._keys, published, strict=False):
            if kid is not None:  # an issuer that names keys its own way (not RFC 7638)
                self._by_kid.setdefault(kid, key)
        self._signer = self._keys[0] if self._keys[0].sign is not None else None
        self._sign = self._signing_function()
        # The protected header and the issuer/audience members never change: encode once.
        first = self._keys[0]
        self._header = b64url_encode(
            _dumps({"alg": algorithm, "kid": first.kid, "typ": "JWT"}).encode()
        )
        fixed = ""
        if issuer is not None:
            fixed += f',"iss":{_dumps(issuer)}'
        if audience is not None:
            fixed += f',"aud":{_dumps(audience)}'
        self._fixed_claims = fixed
        # The session layer reads these per store; they depend on the configuration. With a
        # deny list every load and update asks a server store, so the store is not local
        # (and load_nowait/save_nowait are not used).
        object.__setattr__(self, "local", revocation is None)
        if revocation is None and type(self).load_nowait is JWTStore.load_nowait:
            # load_nowait without its check for a deny list: one call less per request (not
            # when a subclass overrides load_nowait: its override must run).
            object.__setattr__(self, "load_nowait", self._open)
        object.__setattr__(
            self, "session_class", JWTSession if self._signer is not None else ReadOnlySession
        )

    # -- configuration ---------------------------------------------------------------------
    @property
    def revocable(self) -> bool:
        """True when logout kills copies of the token too (a ``revocation`` store is set)."""
        return self.revocation is not None

    @property
    def read_only(self) -> bool:
        """True when the store holds no private key: it verifies but never issues tokens."""
        return self._signer is None

    def _prepare(self, key: KeyInput, position: int) -> _Key:
        where = f"keys[{position}]"
        if self.algorithm in _HMAC_MIN_BYTES:
            return self._prepare_secret(key, where)
        try:
            prepared = self._algorithm.prepare_key(key)
        except (InvalidKeyError, ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"{where}: not a usable {self.algorithm} key ({exc}); give PEM text or a "
                "cryptography key object"
            ) from exc
        public: Any
        if self.algorithm == "RS256":
            if not isinstance(prepared, RSAPrivateKey | RSAPublicKey):
                self._wrong_key_type(where, "an RSA key")
            if prepared.key_size < _MIN_RSA_BITS:
                raise ConfigurationError(
                    f"{where}: a {prepared.key_size}-bit RSA key is too weak; use at least "
                    f"{_MIN_RSA_BITS} bits (or EdDSA)"
                )
            public = prepared.public_key() if isinstance(prepared, RSAPrivateKey) else prepared
        elif self.algorithm == "ES256":
            if not isinstance(prepared, EllipticCurvePrivateKey | EllipticCurvePublicKey):
                self._wrong_key_type(where, "an EC key")
            if not isinstance(prepared.curve, SECP256R1):
                raise ConfigurationError(
                    f"{where}: ES256 needs a P-256 (secp256r1) key, not {prepared.curve.name}"
                )
            public = (
                prepared.public_key() if isinstance(prepared, EllipticCurvePrivateKey) else prepared
            )
        else:  # EdDSA
            if not isinstance(prepared, Ed25519PrivateKey | Ed25519PublicKey):
                self._wrong_key_type(where, "an Ed25519 key")
            public = prepared.public_key() if isinstance(prepared, Ed25519PrivateKey) else prepared
        jwk: dict[str, Any] = dict(self._algorithm.to_jwk(public, as_dict=True))
        kid = _thumbprint(jwk)
        jwk.update(kid=kid, alg=self.algorithm, use="sig")
        signer = None if prepared is public else prepared
        return _Key(kid=kid, verify=public, sign=signer, jwk=jwk)

    def _signing_function(self) -> Callable[[bytes], bytes] | None:
        """Signs with the first key: PyJWT's algorithm, or for HMAC :func:`_hmac_signer`."""
        signer = self._signer
        if signer is None:
            return None
        if self.algorithm in _HMAC_MIN_BYTES:
            secret = signer.sign
            assert isinstance(secret, bytes)  # _prepare_secret made it
            return _hmac_signer(secret, "sha" + self.algorithm[2:])
        algorithm, key = self._algorithm, signer.sign

        def sign(message: bytes) -> bytes:
            return bytes(algorithm.sign(message, key))

        return sign

    def _wrong_key_type(self, where: str, wanted: str) -> NoReturn:
        raise ConfigurationError(f"{where}: {self.algorithm} needs {wanted}")

    def _prepare_secret(self, key: KeyInput, where: str) -> _Key:
        if isinstance(key, str):
            key = key.encode()
        if not isinstance(key, bytes):
            raise ConfigurationError(
                f"{where}: {self.algorithm} takes a secret as bytes or str, not "
                f"{type(key).__name__}"
            )
        minimum = _HMAC_MIN_BYTES[self.algorithm]
        if len(key) < minimum:
            raise ConfigurationError(
                f"{where}: a {len(key)}-byte secret is too short for {self.algorithm}; use at "
                f"least {minimum} random bytes, for example secrets.token_bytes({minimum})"
            )
        try:
            secret = self._algorithm.prepare_key(key)
        except InvalidKeyError as exc:
            # PyJWT refuses PEM/SSH keys as HMAC secrets: the key-confusion attack's setup.
            raise ConfigurationError(
                f"{where}: this looks like an asymmetric key, not an HMAC secret; use "
                "algorithm='EdDSA', 'ES256' or 'RS256' with it"
            ) from exc
        kid = _thumbprint({"kty": "oct", "k": b64url_encode(secret)})
        return _Key(kid=kid, verify=secret, sign=secret, jwk=None)

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set of the verification keys, for ``/.well-known/jwks.json``.

        Raises ConfigurationError for HMAC algorithms: their key is a shared secret.
        """
        if self.algorithm in _HMAC_MIN_BYTES:
            raise ConfigurationError(
                f"{self.algorithm} keys are shared secrets and must never be published; a "
                "JWKS needs an asymmetric algorithm (EdDSA, ES256 or RS256)"
            )
        return {"keys": [dict(key.jwk) for key in self._keys if key.jwk is not None]}

    # -- lifecycle: the revocation store is ours to open and close ----------------------------
    async def open(self) -> None:
        if self.revocation is not None:
            await self.revocation.open()

    async def close(self) -> None:
        if self.revocation is not None:
            await self.revocation.close()

    async def purge_expired(self) -> int:
        return 0 if self.revocation is None else await self.revocation.purge_expired()

    # -- verification ---------------------------------------------------------------------------
    def _open(self, token: str, namespace: str) -> _Opened | None:
        """Verify ``token`` (no I/O): signature, header and claims; None when anything is off.

        A token that verified before (or that this store signed) is found in the cache of
        verified tokens, which skips the signature check, the strict parse and the claim
        checks that cannot change; the clock-dependent checks (``exp``, ``nbf``, ``iat``
        with the leeway) run on every call. The data come back as fresh objects.
        """
        key = (namespace, token)
        verified = self._verified.get(key)
        fresh = verified is None
        if verified is None:
            verified = self._verify_claims(token, namespace)
            if verified is None:
                return None
        t = session_module.now()
        leeway = self.leeway
        if verified.exp + leeway <= t:
            return None
        if verified.nbf is not None and verified.nbf > t + leeway:
            return None
        if verified.iat is not None and verified.iat > t + leeway:
            return None
        if fresh:  # an expired token is not worth a place in the cache: cached only now
            self._verified.remember(key, verified)
        flashes = [] if verified.flashes_json is None else _scan(verified.flashes_json, 0)[0]
        return _new_tuple(_Opened, (_scan(verified.data_json, 0)[0], flashes, verified, t))

    def _verify_claims(self, token: str, namespace: str) -> _Verified | None:
        """Signature, header, strict parse and the claim checks that do not use the clock."""
        raw_payload = self._verify(token)
        if raw_payload is None:
            return None
        claims = _json_object(raw_payload)
        return None if claims is None else self._check_claims(claims, token, namespace)

    def _verify(self, token: str) -> bytes | None:
        """The payload of ``token`` if its header and signature check out, else None."""
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            return None
        parts = token.split(".")
        if len(parts) != 3:
            return None
        header_b64, payload_b64, signature_b64 = parts
        if header_b64 == self._header:  # our own tokens: skip parsing a known header
            key: _Key | None = self._keys[0]
        else:
            key = self._key_for(header_b64)
        if key is None:
            return None
        signature = _b64decode(signature_b64)
        raw_payload = _b64decode(payload_b64)
        if signature is None or raw_payload is None:
            return None
        signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
        try:
            if not self._algorithm.verify(signing_input, key.verify, signature):
                return None
        except (ValueError, TypeError):  # a signature of an impossible length or shape
            return None
        return raw_payload

    def _key_for(self, header_b64: str) -> _Key | None:
        raw = _b64decode(header_b64)
        header = None if raw is None else _json_object(raw)
        # Exactly the configured algorithm: never "none", never a key type the token picks.
        if header is None or header.get("alg") != self.algorithm:
            return None
        if "crit" in header or "b64" in header:  # extensions we do not implement
            return None
        kid = header.get("kid")
        if kid is None:
            return self._keys[0]
        return self._by_kid.get(kid) if isinstance(kid, str) else None

    def _check_claims(self, claims: dict[str, Any], token: str, namespace: str) -> _Verified | None:
        """Every check of the claims that does not depend on the clock (see _open)."""
        exp = claims.pop("exp", None)
        # A token without exp would never expire: a session always has one.
        if not _is_number(exp):
            return None
        nbf = claims.pop("nbf", None)
        if nbf is not None and not _is_number(nbf):
            return None
        iat = claims.pop("iat", None)
        if iat is not None and not _is_number(iat):
            return None
        iss = claims.pop("iss", None)
        if self.issuer is not None and iss != self.issuer:
            return None
        aud = claims.pop("aud", None)
        if aud is not None or self.audience is not None:
            # RFC 7519 4.1.3: a token meant for an audience is refused by anyone who is not it.
            if self.audience is None:
                return None
            if aud != self.audience and not (isinstance(aud, list) and self.audience in aud):
                return None
        jti = claims.pop("jti", None)
        if jti is not None and not isinstance(jti, str):
            return None
        private = claims.pop(PRIVATE_CLAIM, None)
        if private is None:
            # Minted elsewhere: its jti names it on the deny list, else its own hash does.
            sid = jti if jti else b64url_encode(hashlib.sha256(token.encode()).digest()[:16])
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
        )

    def _deny_key(self, sid: str) -> str:
        return record_key(_DENY_NAMESPACE, sid)

    async def _denied(self, revocation: ServerStore, sid: str) -> bool:
        # Through get(): concurrent checks share the store's batched round trips.
        return await revocation.get(self._deny_key(sid)) is not None

    # -- the store contract ----------------------------------------------------------------
    async def load(self, token: str, *, namespace: str) -> _Opened | None:
        opened = self._open(token, namespace)
        if opened is None:
            return None
        revocation = self.revocation
        if revocation is not None and await self._denied(revocation, opened.verified.sid):
            return None
        return opened

    def load_nowait(self, token: str, namespace: str) -> _Opened | None:
        """:meth:`load` without a coroutine; the session layer calls it when there is no deny
        list to ask (the store is then ``local``; see AbstractStore)."""
        if self.revocation is not None:
            raise RuntimeError("load_nowait: this JWTStore checks a deny list; await load()")
        return self._open(token, namespace)

    # abc.py types the defaults (staticmethods over the binary payload) as taking and giving
    # bytes; the contract is "whatever load returned" and "whatever save takes".
    def restore(
        self,
        payload: Any,
        serializer: Serializer,
        *,
        identity: str | None,
        idle_timeout: int,
        absolute_timeout: int,
    ) -> Session | None:
        if not isinstance(payload, _Opened):
            return None
        t = payload.now
        verified = payload.verified
        created, accessed = verified.created, verified.accessed
        max_age = verified.max_age
        if created is None or accessed is None:  # minted elsewhere: no bookkeeping claim
            iat = verified.iat
            created = accessed = t if iat is None else min(int(iat), t)
        elif created > t + _CLOCK_SKEW or accessed > t + _CLOCK_SKEW or accessed < created:
            return None
        idle = idle_timeout if max_age is None else max_age
        if t - accessed > idle or t - created > absolute_timeout:
            return None
        session_class: Any = self.session_class
        session = session_class.__new__(session_class)
        session._identity = identity
        session._data = payload.data
        session._new = False
        session._created = created
        session._accessed = accessed
        session._max_age = max_age
        session._flashes = payload.flashes
        session._dirty = False
        session._discard_old = False
        session._sid = verified.sid
        return session  # type: ignore[no-any-return]

    def dump(self, session: Session, serializer: Serializer, accessed: int) -> _Draft:
        data = session._data
        if not RESERVED_CLAIMS.isdisjoint(data):
            for key in data:  # again: a subclass or a direct _data edit skips __setitem__
                _check_claim_name(key)
        try:
            body = _dumps(data)
        except (TypeError, ValueError) as exc:
            raise _serialization_error(data, exc) from exc
        created, max_age = session._created, session._max_age
        private = f'{{"c":{created},"a":{accessed}'  # whole seconds: ints, no escaping
        if max_age is not None:
            private += f',"m":{max_age}'
        flashes = None
        if session._flashes:
            try:
                flashes = _dumps(session._flashes)
            except (TypeError, ValueError) as exc:
                raise SerializationError(
                    f"a flash message cannot be serialized as JSON ({exc}); nothing was saved"
                ) from exc
            private += f',"f":{flashes}'
        return _Draft(
            body, private + "}", getattr(session, "_sid", None), flashes, created, accessed, max_age
        )

    async def save(self, token: str | None, data: Any, *, ttl: int, namespace: str) -> str | None:
        sid = self._lineage(token, data, namespace)
        if sid is None or self._signer is None:
            return token if sid is not None else None
        revocation = self.revocation
        if token is not None and revocation is not None and await self._denied(revocation, sid):
            return None  # logged out while this request ran: never resurrect it
        return self._issue(sid, data, ttl, namespace)

    def save_nowait(self, token: str | None, data: Any, ttl: int, namespace: str) -> str | None:
        """:meth:`save` without a coroutine; the session layer calls it when there is no deny
        list to ask (the store is then ``local``; see AbstractStore)."""
        if self.revocation is not None:
            raise RuntimeError("save_nowait: this JWTStore checks a deny list; await save()")
        sid = self._lineage(token, data, namespace)
        if sid is None or self._signer is None:
            return token if sid is not None else None
        return self._issue(sid, data, ttl, namespace)

    def _lineage(self, token: str | None, data: Any, namespace: str) -> str | None:
        """The lineage id the token to issue carries (a new one for a new session); None when
        the presented token no longer verifies. A read-only store returns the lineage too
        (save then keeps the client's token) but refuses to start a session."""
        if not isinstance(data, _Draft):
            raise TypeError(f"JWTStore.save takes what JWTStore.dump returns, not {type(data)}")
        if token is None:
            if self._signer is None:
                _read_only("issue a token")
            return _random_id()  # a new session: a new lineage
        if data.sid is not None:
            return data.sid
        opened = self._open(token, namespace)
        return None if opened is None else opened.verified.sid

    def _issue(self, sid: str, data: _Draft, ttl: int, namespace: str) -> str:
        """Sign a new token for lineage ``sid`` carrying ``data``, valid ``ttl`` seconds."""
        sign = self._sign
        assert sign is not None
        t = session_module.now()
        # The default cookie name is implied, so most tokens carry no namespace at all.
        bound = "" if namespace == DEFAULT_COOKIE_NAME else f'"n":{_dumps(namespace)},'
        head = (
            f'{{"iat":{t},"exp":{t + ttl},"jti":"{_random_id()}"'
            f'{self._fixed_claims},"{PRIVATE_CLAIM}":{{"s":{_quote(sid)},{bound}'
            f"{data.private[1:]}"
        )
        payload = head + "}" if data.body == "{}" else f"{head},{data.body[1:]}"
        signing_input = f"{self._header}.{b64url_encode(payload.encode('ascii'))}"
        issued = f"{signing_input}.{b64url_encode(sign(signing_input.encode('ascii')))}"
        if len(issued) > MAX_TOKEN_BYTES:
            raise SerializationError(
                f"the session's JWT would be {len(issued)} bytes, over the {MAX_TOKEN_BYTES}-"
                "byte limit of a request header; keep less in the session (the token carries "
                "all of it); nothing was saved"
            )
        # The client presents this token next: remembering it saves that request's checks.
        self._verified.remember(
            (namespace, issued),
            _Verified(
                data.body,
                data.flashes,
                sid,
                t + ttl,
                None,
                t,
                data.created,
                data.accessed,
                data.max_age,
            ),
        )
        return issued

    async def delete(self, token: str, *, namespace: str) -> None:
        """Put the token's session on the deny list (with ``revocation``); else nothing.

        The entry is keyed by the session lineage id and outlives every token of the session
        issued so far: each re-issue expires no later than now plus the presented token's
        lifetime, so logging out with any copy also kills the later ones.
        """
        revocation = self.revocation
        if revocation is None:
            return
        opened = self._open(token, namespace)
        if opened is None:  # forged, or already expired: nothing a client could still use
            return
        verified = opened.verified
        t = session_module.now()
        lifetime = 0 if verified.iat is None else int(verified.exp - verified.iat)
        ttl = max(int(verified.exp) + self.leeway - t, lifetime + self.leeway, 1)
        await revocation.create(self._deny_key(verified.sid), _DENIED, ttl)


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
    return isinstance(private.get("f", []), list)


def _serialization_error(data: dict[str, Any], exc: Exception) -> SerializationError:
    for key, value in data.items():
        try:
            _dumps(value)
        except (TypeError, ValueError) as item_exc:
            return SerializationError(
                f"session[{key!r}] holds a {type(value).__name__} that cannot be a JWT claim "
                f"({item_exc}); store plain JSON values (str, int, float, bool, None, list, "
                "dict) instead; nothing was saved"
            )
    return SerializationError(
        f"the session cannot be serialized as JSON ({exc}); nothing was saved"
    )


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
