"""JWTStore: verifies, opens and issues the tokens, and keeps the cache of verified tokens."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from ... import session as session_module
from ..._cache import VerifiedCache
from ...abc import AbstractStore, ServerStore, mirrors
from ...cookies import DEFAULT_COOKIE_NAME
from ...crypto import b64url_encode
from ...exceptions import ConfigurationError, SerializationError
from ...ids import record_key
from ...serializers import Serializer, check_depth, check_keys
from ...session import (
    DEFAULT_CLOCK_SKEW_TOLERANCE,
    Session,
    loaded_session,
    within_timeouts,
)
from .. import _revocation
from .jose import (
    MAX_TOKEN_BYTES,
    PRIVATE_CLAIM,
    RESERVED_CLAIMS,
    SESSION_TYPE,
    _b64decode,
    _dumps,
    _json_object,
    _random_id,
    _Verified,
    check_claims,
    parse_header,
)
from .jwks import JWKSEndpoint, KeyFollower, keys_from_jwks
from .keys import KeyInput, _Key, algorithm_for, key_set, prepare_keys, signing_function
from .sessions import JWTSession, ReadOnlySession, _check_claim_name, _read_only

__all__ = ["JWTStore"]

# The deny list shares a server store with nothing else of ours, but a fixed namespace keeps
# its keys apart from session records if the application reuses one store for both. It is
# the same for every cookie name: a JWT does not say which name it was issued under, so a
# revocation must hold wherever the token is presented.
_DENY_NAMESPACE = "aiohttp_sessionkit.jwt.revoked"


# -- what load() and dump() hand over ------------------------------------------------------------


class _Opened(NamedTuple):
    """A token valid now: what ``load`` returns and ``restore`` turns into a session. The
    data and flashes are fresh objects on every load, so a session changed in place never
    changes the cache."""

    data: dict[str, Any]
    flashes: list[Any]
    verified: _Verified
    now: int  # the clock when the token was checked; restore() uses the same reading


# Reads the JSON the cache holds, which jose.py wrote: json.loads would add its type checks
# and two regular-expression matches for whitespace that JSON we wrote never has.
_read_json = json.JSONDecoder().raw_decode


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
    user: str | None = None  # the user the session is bound to (set_user_key), if any


class JWTStore(_revocation.DenyListUsers, AbstractStore):
    """Sessions as signed JWTs: the token is the session, readable by other services.

    ``keys`` is one key or a list: the first signs, every listed key verifies, and each token
    names its key with ``kid`` (the RFC 7638 thumbprint of the key), so a key is rotated by
    listing a new one second (it shows up in :meth:`jwks` first), then first, then removing
    the old one once its tokens have expired. A token without ``kid`` is checked against the
    first key. HMAC secrets (HS256/384/512) are ``bytes`` or ``str`` of at least 32/48/64
    bytes; asymmetric keys are PEM text or ``cryptography`` key objects. A store whose first
    key is a public key is read-only: it verifies tokens and raises ReadOnlySessionError on
    any change. A verifier may be given the issuer's JSON Web Key Set instead, as a dict
    (``{"keys": [...]}``): its keys for ``algorithm`` verify, under their own ``kid`` too;
    or a :class:`~aiohttp_sessionkit.stores.jwt.JWKSEndpoint`, to fetch the set at startup
    and follow the issuer's key rotation without a restart.

    Without ``revocation`` a JWT cannot be revoked: logout drops the client's copy, but a
    copy taken earlier opens until its ``exp``. Keep ``max_age`` short, or pass any
    server-side store (memory, Redis, PostgreSQL, MongoDB) as ``revocation``: logout,
    ``regenerate()`` and ``new_session()`` then put the session on a deny list there, which
    every request checks (a store that cannot be reached answers 503).

    A token opens only if its header says ``"typ": "session+jwt"`` (ours always do); with
    ``accept_untyped=True`` a token whose ``typ`` is missing or ``JWT`` opens too, for an
    issuer that cannot set the header. A token of another explicit type never opens.
    """

    client_side: ClassVar[bool] = True
    session_class: ClassVar[type[Session]] = JWTSession

    def __init__(
        self,
        keys: KeyInput | Sequence[KeyInput] | Mapping[str, Any] | JWKSEndpoint,
        *,
        algorithm: str = "HS256",
        issuer: str | None = None,
        audience: str | None = None,
        leeway: int = 0,
        revocation: ServerStore | None = None,
        cache_size: int = 4096,
        accept_untyped: bool = False,
    ) -> None:
        # (session name, token) -> the payload JSON of a token whose signature and shape
        # were verified (or that this store signed): see _open.
        self._verified: VerifiedCache[_Verified] = VerifiedCache(cache_size)
        self._algorithm = algorithm_for(algorithm)
        if isinstance(leeway, bool) or not isinstance(leeway, int) or not 0 <= leeway <= 3600:
            raise ConfigurationError(f"leeway={leeway!r}: give whole seconds from 0 to 3600")
        for name, value in (("issuer", issuer), ("audience", audience)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"{name}={value!r}: give a non-empty string or None")
        if not isinstance(accept_untyped, bool):
            raise ConfigurationError(f"accept_untyped={accept_untyped!r}: give True or False")
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
        self.accept_untyped = accept_untyped
        # The longest absolute timeout a session of this store is held to, learned from
        # restore() (the session layer's setting reaches a store no other way): every token
        # of a session expires by its creation plus this, so a deny-list entry lasts that
        # long. 0 until a session was restored here (or setup told it: set_absolute_timeout).
        self._absolute_timeout = 0
        self._user_key: str | None = None  # set_user_key()
        self._cache_size = cache_size
        #: Fetches the keys of a JWKSEndpoint (None: the keys were given).
        self._follower: KeyFollower | None = None
        self._keys: list[_Key] = []
        self._by_kid: dict[str, _Key] = {}
        #: Our tokens' protected header, when this store has a first key to name in it.
        self._header: str | None = None
        if isinstance(keys, JWKSEndpoint):  # keys come at startup: open()
            self._follower = KeyFollower(keys, self._install_jwks)
        elif isinstance(keys, Mapping):  # a JSON Web Key Set, as a verifier is given one
            self._install_jwks(keys)
        else:
            self._install(prepare_keys(keys, algorithm), [])
        first = self._keys[0] if self._keys else None
        self._signer = first if first is not None and first.sign is not None else None
        self._sign = signing_function(self._signer, algorithm)
        if first is not None:  # never changes: encoded once
            self._header = b64url_encode(
                _dumps({"alg": algorithm, "kid": first.kid, "typ": SESSION_TYPE}).encode()
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
        object.__setattr__(
            self, "session_class", JWTSession if self._signer is not None else ReadOnlySession
        )

    # -- configuration ---------------------------------------------------------------------
    @property
    def read_only(self) -> bool:
        """True when the store holds no private key: it verifies but never issues tokens."""
        return self._signer is None

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set of the verification keys, for ``/.well-known/jwks.json``.

        Raises ConfigurationError for HMAC algorithms: their key is a shared secret.
        """
        return key_set(self._keys, self.algorithm)

    def _install(self, keys: list[_Key], published: list[str | None]) -> None:
        """Use ``keys``; ``published`` are the kids a JWKS gives them, in order."""
        by_kid = {key.kid: key for key in keys}
        for key, kid in zip(keys, published, strict=False):
            if kid is not None:  # an issuer that names keys its own way (not RFC 7638)
                by_kid.setdefault(kid, key)
        if self._keys and keys != self._keys:
            # A key that left the set must verify nothing more, cached tokens included.
            self._verified = VerifiedCache(self._cache_size)
        self._keys, self._by_kid = keys, by_kid

    def _install_jwks(self, document: Mapping[str, Any]) -> None:
        pairs = keys_from_jwks(document, self.algorithm)
        self._install(
            prepare_keys([key for key, _ in pairs], self.algorithm), [kid for _, kid in pairs]
        )

    # -- lifecycle: the revocation store and the key fetcher are ours to open and close -----
    async def open(self) -> None:
        if self.revocation is not None:
            await self.revocation.open()
        if self._follower is not None:
            await self._follower.start()

    async def close(self) -> None:
        if self._follower is not None:
            await self._follower.stop()
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
        if verified.iat > t + leeway:
            return None
        if fresh:  # an expired token is not worth a place in the cache: cached only now
            self._verified.remember(key, verified)
        flashes = [] if verified.flashes_json is None else _read_json(verified.flashes_json)[0]
        return _Opened(_read_json(verified.data_json)[0], flashes, verified, t)

    def _verify_claims(self, token: str, namespace: str) -> _Verified | None:
        """Signature, header, strict parse and the claim checks that do not use the clock."""
        raw_payload = self._verify(token)
        if raw_payload is None:
            return None
        claims = _json_object(raw_payload)
        if claims is None:
            return None
        return check_claims(claims, token, namespace, self.issuer, self.audience)

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
        """The key a token's header names (by ``kid``; the first key without one), or None."""
        header = parse_header(header_b64, self.algorithm, self.accept_untyped)
        if header is None:
            return None
        kid = header.get("kid")
        if kid is None:
            return self._keys[0] if self._keys else None
        if not isinstance(kid, str):
            return None
        key = self._by_kid.get(kid)
        if key is None and self._follower is not None:
            self._follower.unknown_kid()  # a key the issuer rotated in since the last fetch
        return key

    def _deny_key(self, sid: str) -> str:
        return record_key(_DENY_NAMESPACE, sid)

    def _binding(self, opened: _Opened) -> tuple[str | None, int]:
        """The user the token's session is bound to (None: no one, or no ``user_key``) and
        when it became that user's session (epoch microseconds; see _revocation.born)."""
        user_key = self._user_key
        user = None if user_key is None else _revocation.bound_user(opened.data.get(user_key))
        verified = opened.verified
        created = verified.created
        if created is None:  # minted elsewhere: it began at iat (see restore)
            created = min(int(verified.iat), opened.now)
        return user, _revocation.born(created, verified.bound)

    def _refused(
        self, revocation: ServerStore, sid: str, user: str | None, born: int, namespace: str
    ) -> Awaitable[bool]:
        # Through get(): concurrent checks share the store's batched round trips.
        return _revocation.refused(
            revocation,
            self._deny_key(sid),
            None if user is None else _revocation.cutoff_key(namespace, user),
            born,
        )

    def handle(self, token: str, *, namespace: str) -> str | None:
        """The non-secret handle of the token's session (its deny-list key), or None
        without a deny list or when the token does not verify."""
        if self.revocation is None:
            return None
        opened = self._open(token, namespace)
        return None if opened is None else self._deny_key(opened.verified.sid)

    # -- the store contract ----------------------------------------------------------------
    async def load(self, token: str, *, namespace: str) -> _Opened | None:
        opened = self._open(token, namespace)
        if opened is None:
            return None
        revocation = self.revocation
        if revocation is not None:
            user, born = self._binding(opened)
            if await self._refused(revocation, opened.verified.sid, user, born, namespace):
                return None
        return opened

    @mirrors(load)
    def load_nowait(self, token: str, namespace: str) -> _Opened | None:
        """:meth:`load` without a coroutine; the session layer calls it when there is no deny
        list to ask (the store is then ``local``; see abc.mirrors)."""
        if self.revocation is not None:
            raise RuntimeError("load_nowait: this JWTStore checks a deny list; await load()")
        return self._open(token, namespace)

    # abc.py types the defaults (staticmethods over the binary payload) as taking and giving
    # bytes; the contract is "whatever load returned" and "whatever save takes". Its
    # keywords repeat AbstractStore.restore's on purpose: an override.
    def restore(
        self,
        payload: Any,
        serializer: Serializer,
        *,
        identity: str | None,
        idle_timeout: int,
        absolute_timeout: int,
        clock_skew_tolerance: int = DEFAULT_CLOCK_SKEW_TOLERANCE,
    ) -> Session | None:
        if not isinstance(payload, _Opened):
            return None
        t = payload.now
        verified = payload.verified
        if absolute_timeout > self._absolute_timeout:
            self._absolute_timeout = absolute_timeout  # see __init__
        created, accessed = verified.created, verified.accessed
        max_age = verified.max_age
        if created is None or accessed is None:  # minted elsewhere: no bookkeeping claim
            # Both timeouts count from iat, never from now: a token minted a year ago with
            # a ten-year exp is a year old.
            created = accessed = min(int(verified.iat), t)
        # The same clock checks and the same construction as every other store's restore.
        if not within_timeouts(
            created, accessed, max_age, t, idle_timeout, absolute_timeout, clock_skew_tolerance
        ):
            return None
        session: Any = loaded_session(
            self.session_class,
            identity,
            payload.data,
            payload.flashes,
            created,
            accessed,
            max_age,
            lineage=verified.sid,  # what a logout remembers (middleware.ENDED)
        )
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
        check_keys(data, root="session", encoded=body)  # JSON would make a str of a key
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
            check_keys(session._flashes, root="flashes", encoded=flashes)
            private += f',"f":{flashes}'
        user_key = self._user_key
        return _Draft(
            body,
            private + "}",
            getattr(session, "_sid", None),
            flashes,
            created,
            accessed,
            max_age,
            None if user_key is None else _revocation.bound_user(data.get(user_key)),
        )

    async def save(self, token: str | None, data: Any, *, ttl: int, namespace: str) -> str | None:
        sid = self._lineage(token, data, namespace)
        if sid is None or self._signer is None:
            return token if sid is not None else None
        revocation = self.revocation
        since = None
        if revocation is not None:
            since = _revocation.binding_time()
            if token is not None:  # an update: of a session that must not have ended meanwhile
                user, born = data.user, _revocation.born(data.created, None)
                old = self._open(token, namespace)
                if old is not None:
                    user, born = self._binding(old)
                    sid_then = old.verified.sid
                else:  # expired during the request: judged by what it carried
                    sid_then = sid
                if await self._refused(revocation, sid_then, user, born, namespace):
                    return None  # logged out (or cut off) while this request ran
                if data.user is not None and data.user == user and sid_then == sid:
                    since = born  # the same session of the same user: its binding stays
        return self._issue(sid, data, ttl, namespace, since)

    @mirrors(save)
    def save_nowait(self, token: str | None, data: Any, ttl: int, namespace: str) -> str | None:
        """:meth:`save` without a coroutine; the session layer calls it when there is no deny
        list to ask (the store is then ``local``; see abc.mirrors)."""
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

    def _issue(
        self, sid: str, data: _Draft, ttl: int, namespace: str, since: int | None = None
    ) -> str:
        """Sign a new token for lineage ``sid`` carrying ``data``, valid ``ttl`` seconds;
        ``since``: when its session became the bound user's (see ``_binding``)."""
        sign = self._sign
        assert sign is not None
        t = session_module.now()
        # The default cookie name is implied, so most tokens carry no namespace at all.
        bound = "" if namespace == DEFAULT_COOKIE_NAME else f'"n":{_dumps(namespace)},'
        if since is not None and data.user is not None:
            bound += f'"b":{since},'
        else:
            since = None
        head = (
            f'{{"iat":{t},"exp":{t + ttl},"jti":"{_random_id()}"'
            f'{self._fixed_claims},"{PRIVATE_CLAIM}":{{"s":{_dumps(sid)},{bound}'
            f"{data.private[1:]}"
        )
        payload = head + "}" if data.body == "{}" else f"{head},{data.body[1:]}"
        try:
            # Never issue what a verifier would refuse. The data's object is the payload's
            # own, and our claims nest two deep at most, so the data alone tell, and are
            # usually short enough to pass on their length; flash messages sit deeper.
            check_depth(data.body if data.flashes is None else payload)
        except ValueError as exc:
            raise SerializationError(
                f"the session cannot be a JWT: {exc} (the token's own claims count); keep "
                "the session's data flatter; nothing was saved"
            ) from exc
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
                since,
            ),
        )
        return issued

    async def delete(self, token: str, *, namespace: str) -> None:
        """Put the token's session on the deny list (with ``revocation``); else nothing.

        The entry is keyed by the session lineage id and lasts until the last moment any
        token of the session could open: its creation plus the absolute timeout, which no
        re-issue outlives whatever its ``max_age``. Before this store restored a session
        it does not know that timeout, and the entry lasts until the presented token's
        ``exp`` or its full lifetime from now, whichever is later. A later logout extends
        the entry, never shortens it.
        """
        revocation = self.revocation
        if revocation is None:
            return
        opened = self._open(token, namespace)
        if opened is None:  # forged, or already expired: nothing a client could still use
            return
        verified = opened.verified
        t = session_module.now()
        if self._absolute_timeout:
            created = verified.created
            if created is None:  # minted elsewhere: it began at iat (see restore)
                created = min(int(verified.iat), t)
            until = created + self._absolute_timeout
        else:
            until = max(int(verified.exp), t + int(verified.exp - verified.iat))
        until += self.leeway
        # Never shortened; a longer one replaces it.
        await _revocation.keep_latest(revocation, self._deny_key(verified.sid), until, until - t)


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
