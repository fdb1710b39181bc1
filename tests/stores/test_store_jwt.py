"""JWTStore: configuration, claims, PyJWT interop, hostile tokens, rotation, JWKS, revocation.

End-to-end tests go through the aiohttp test client with the header transport
(``Authorization: Bearer``) unless they are about the cookie transport.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

import jwt as pyjwt
import pytest
import redis.asyncio as aioredis
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import RSAAlgorithm, get_default_algorithms

from aiohttp_sessionkit import (
    ConfigurationError,
    CookieTransport,
    HeaderTransport,
    JWTStore,
    MemoryStore,
    SerializationError,
    ServerStore,
    Session,
    StoreUnavailable,
    get_session,
    jwks_handler,
    new_session,
    save_session,
    setup,
)
from aiohttp_sessionkit.serializers import MAX_DEPTH, JSONSerializer
from aiohttp_sessionkit.session import decode_payload, encode_payload
from aiohttp_sessionkit.stores.jwt import (
    MAX_TOKEN_BYTES,
    PRIVATE_CLAIM,
    RESERVED_CLAIMS,
    SESSION_TYPE,
    JWTSession,
    ReadOnlySession,
    ReadOnlySessionError,
)
from aiohttp_sessionkit.stores.redis import RedisStore
from tests.conftest import CountingStore, FakeClock, StoreFactory
from tests.harness.servers import ServerHandle, free_port

NS = "AIOHTTP_SESSION"
ISSUER = "https://auth.example"
AUDIENCE = "api"
JSON = JSONSerializer()
DAY = 24 * 3600


# -- keys and helpers ---------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def private_key(algorithm: str) -> Any:
    """A fresh signing key for ``algorithm``."""
    if algorithm.startswith("HS"):
        return secrets.token_bytes({"HS256": 32, "HS384": 48, "HS512": 64}[algorithm])
    if algorithm == "EdDSA":
        return Ed25519PrivateKey.generate()
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: Any) -> bytes:
    data: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def verify_key(key: Any) -> Any:
    return key if isinstance(key, bytes) else key.public_key()


ALGORITHMS = ["HS256", "HS384", "HS512", "EdDSA", "ES256", "RS256"]


def claims(**extra: Any) -> dict[str, Any]:
    """Registered claims of a token valid for ten minutes, plus ``extra``."""
    t = int(time.time())
    base: dict[str, Any] = {"exp": t + 600, "iat": t, "jti": secrets.token_urlsafe(8)}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def forge(
    header: dict[str, Any] | str,
    payload: dict[str, Any] | str | bytes,
    key: Any,
    algorithm: str,
) -> str:
    """A compact JWS over exactly these header and payload texts, signed with ``key``."""
    header_text = header if isinstance(header, str) else json.dumps(header)
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    raw = payload if isinstance(payload, bytes) else payload.encode()
    signing_input = f"{b64(header_text.encode())}.{b64(raw)}".encode()
    signature = get_default_algorithms()[algorithm].sign(signing_input, key)
    return low_s(f"{signing_input.decode()}.{b64(signature)}", algorithm)


#: The order of P-256 (SEC 2): ECDSA signatures (r, s) and (r, n - s) both verify.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def s_of(token: str) -> int:
    """The s half of an ES256 token's signature."""
    signature = base64.urlsafe_b64decode(token.split(".")[2] + "==")
    return int.from_bytes(signature[32:], "big")


def es256_twin(token: str) -> str:
    """The same ES256 token with the other valid signature, (r, n - s)."""
    head, body, signature_b64 = token.split(".")
    signature = base64.urlsafe_b64decode(signature_b64 + "==")
    s = int.from_bytes(signature[32:], "big")
    return f"{head}.{body}.{b64(signature[:32] + (P256_ORDER - s).to_bytes(32, 'big'))}"


def low_s(token: str, algorithm: str) -> str:
    """An ES256 token in the low-S form JWTStore accepts (a token of another algorithm
    unchanged)."""
    if algorithm != "ES256":
        return token
    return es256_twin(token) if s_of(token) > P256_ORDER // 2 else token


def mint(payload: dict[str, Any], key: Any, algorithm: str, **header: Any) -> str:
    """A session token as another service mints it with PyJWT: the session typ in the
    header, and for ES256 the low-S signature (one spelling per token)."""
    headers = {"typ": SESSION_TYPE, **header}
    return low_s(pyjwt.encode(payload, key, algorithm=algorithm, headers=headers), algorithm)


async def issue(store: JWTStore, data: dict[str, Any], *, ttl: int = 600) -> str:
    """A token from ``store`` holding ``data``, as the session layer would write it."""
    session = JWTSession()
    session.update(data)
    token = await store.save(
        None, store.dump(session, JSON, int(time.time())), ttl=ttl, namespace=NS
    )
    assert token is not None
    return token


async def opened(store: JWTStore, token: str, *, namespace: str = NS) -> Session | None:
    """The session ``token`` opens in ``store``, or None."""
    payload = await store.load(token, namespace=namespace)
    if payload is None:
        return None
    return store.restore(payload, JSON, identity=None, idle_timeout=DAY, absolute_timeout=30 * DAY)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_app(store: JWTStore, **options: Any) -> web.Application:
    """An API: login returns a token, /me reads, /set writes, logout, regenerate, /new."""
    app = web.Application()
    options.setdefault("transport", HeaderTransport())
    setup(app, store, **options)

    async def login(request: web.Request) -> web.Response:
        session = await new_session(request)
        session["sub"] = "alice"
        session["roles"] = ["reader"]
        return web.json_response({"token": await save_session(request)})

    async def me(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response({"data": dict(session), "new": session.new})

    async def set_value(request: web.Request) -> web.Response:
        session = await get_session(request)
        try:
            session[request.match_info["key"]] = await request.json()
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))
        except ReadOnlySessionError as exc:
            return web.Response(status=409, text=str(exc))
        return web.Response(text="set")

    async def logout(request: web.Request) -> web.Response:
        (await get_session(request)).invalidate()
        return web.Response(text="bye")

    async def regenerate(request: web.Request) -> web.Response:
        (await get_session(request)).regenerate()
        return web.Response(text="regenerated")

    async def fresh(request: web.Request) -> web.Response:
        await new_session(request)
        return web.Response(text="fresh")

    app.router.add_post("/login", login)
    app.router.add_get("/me", me)
    app.router.add_post("/set/{key}", set_value)
    app.router.add_post("/logout", logout)
    app.router.add_post("/regenerate", regenerate)
    app.router.add_post("/new", fresh)
    return app


async def login(client: Any) -> str:
    response = await client.post("/login")
    assert response.status == 200
    token: str = (await response.json())["token"]
    assert response.headers["Session-Token"] == token
    return token


async def me(client: Any, token: str) -> dict[str, Any]:
    response = await client.get("/me", headers=bearer(token))
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


FRESH = {"data": {}, "new": True}
ALICE = {"data": {"sub": "alice", "roles": ["reader"]}, "new": False}


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["none", "HS1", "RS512", "PS256", "ES384", "hs256"])
def test_an_algorithm_outside_the_supported_six_is_refused(algorithm: str) -> None:
    with pytest.raises(ConfigurationError, match="choose one of HS256"):
        JWTStore(secrets.token_bytes(64), algorithm=algorithm)


@pytest.mark.parametrize(("algorithm", "minimum"), [("HS256", 32), ("HS384", 48), ("HS512", 64)])
def test_an_hmac_secret_shorter_than_the_hash_is_refused(algorithm: str, minimum: int) -> None:
    with pytest.raises(ConfigurationError, match=f"at least {minimum} random bytes"):
        JWTStore(secrets.token_bytes(minimum - 1), algorithm=algorithm)
    assert JWTStore(secrets.token_bytes(minimum), algorithm=algorithm).algorithm == algorithm
    assert JWTStore("x" * minimum, algorithm=algorithm).read_only is False  # str secrets too


def test_an_rsa_key_under_2048_bits_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test
    with pytest.raises(ConfigurationError, match="1024-bit RSA key is too weak"):
        JWTStore(weak, algorithm="RS256")


def test_es256_refuses_a_key_on_another_curve() -> None:
    with pytest.raises(ConfigurationError, match="secp256r1"):
        JWTStore(ec.generate_private_key(ec.SECP384R1()), algorithm="ES256")


def test_eddsa_refuses_an_ed448_key() -> None:
    with pytest.raises(ConfigurationError, match="Ed25519"):
        JWTStore(ed448.Ed448PrivateKey.generate(), algorithm="EdDSA")


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "RS256"])
def test_an_hmac_store_refuses_a_public_key_as_its_secret(algorithm: str) -> None:
    """The key-confusion attack's setup: a public key used as an HMAC secret."""
    with pytest.raises(ConfigurationError, match="asymmetric key"):
        JWTStore(public_pem(private_key(algorithm)), algorithm="HS256")


@pytest.mark.parametrize(
    ("algorithm", "key_of"), [("RS256", "EdDSA"), ("EdDSA", "ES256"), ("ES256", "RS256")]
)
def test_an_asymmetric_store_refuses_a_key_of_another_type(algorithm: str, key_of: str) -> None:
    with pytest.raises(ConfigurationError, match=r"keys\[0\]"):
        JWTStore(private_key(key_of), algorithm=algorithm)


def test_an_asymmetric_store_refuses_a_plain_secret() -> None:
    with pytest.raises(ConfigurationError, match=r"keys\[0\]: not a usable EdDSA key"):
        JWTStore(secrets.token_bytes(32), algorithm="EdDSA")


def test_an_empty_or_repeated_key_list_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least one key"):
        JWTStore([])
    secret = secrets.token_bytes(32)
    with pytest.raises(ConfigurationError, match="listed twice"):
        JWTStore([secret, secret])


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"leeway": -1}, "leeway"),
        ({"leeway": True}, "leeway"),
        ({"leeway": 1.5}, "leeway"),
        ({"issuer": ""}, "issuer"),
        ({"audience": 3}, "audience"),
        ({"revocation": object()}, "server-side store"),
    ],
)
def test_bad_options_are_configuration_errors(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        JWTStore(secrets.token_bytes(32), **options)


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "RS256"])
def test_pem_text_and_key_objects_give_the_same_key(algorithm: str) -> None:
    key = private_key(algorithm)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    stores = [
        JWTStore(key, algorithm=algorithm),
        JWTStore(pem, algorithm=algorithm),
        JWTStore(pem.decode(), algorithm=algorithm),
        JWTStore(public_pem(key), algorithm=algorithm),
    ]
    assert len({json.dumps(store.jwks(), sort_keys=True) for store in stores}) == 1
    assert [store.read_only for store in stores] == [False, False, False, True]


def test_kid_is_the_rfc7638_thumbprint() -> None:
    # The example key and thumbprint of RFC 7638, section 3.1.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
        "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI"
        "4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    public = RSAAlgorithm.from_jwk({"kty": "RSA", "n": n, "e": "AQAB"})
    store = JWTStore(public, algorithm="RS256")
    assert store.jwks()["keys"][0]["kid"] == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_revocable_only_with_a_revocation_store() -> None:
    secret = secrets.token_bytes(32)
    assert JWTStore(secret).revocable is False
    assert JWTStore(secret, revocation=MemoryStore()).revocable is True
    assert JWTStore(secret).client_side is True


def test_importing_the_package_does_not_import_pyjwt() -> None:
    import subprocess
    import sys

    code = (
        "import sys, aiohttp_sessionkit\n"
        "print('jwt' in sys.modules)\n"
        "aiohttp_sessionkit.JWTStore\n"
        "print('jwt' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


# -- claims -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RESERVED_CLAIMS))
def test_setting_a_reserved_claim_raises_value_error_naming_it(name: str) -> None:
    session = JWTSession()
    with pytest.raises(ValueError, match=f"'{name}' is a claim the session library sets"):
        session[name] = 1
    with pytest.raises(ValueError, match=repr(name)):
        session.update({name: 1})
    assert name not in session and not session.is_dirty


async def test_dump_refuses_a_reserved_claim_that_bypassed_the_session_class() -> None:
    store = JWTStore(secrets.token_bytes(32))
    session = Session(data={"sub": "alice", "iat": 1})  # the plain class does not check
    with pytest.raises(ValueError, match="'iat'"):
        store.dump(session, JSON, int(time.time()))


def test_a_value_that_is_not_json_names_the_key() -> None:
    store = JWTStore(secrets.token_bytes(32))
    session = JWTSession()
    session["ok"] = 1
    session["bad"] = {1, 2}
    with pytest.raises(SerializationError, match=r"session\['bad'\] holds a set"):
        store.dump(session, JSON, int(time.time()))
    session["bad"] = float("nan")
    with pytest.raises(SerializationError, match=r"session\['bad'\]"):
        store.dump(session, JSON, int(time.time()))


async def test_a_handler_setting_a_reserved_claim_gets_value_error_and_nothing_is_written(
    aiohttp_client: Any,
) -> None:
    counting = CountingStore(JWTStore(secrets.token_bytes(32)))
    client = await aiohttp_client(api_app(counting))  # type: ignore[arg-type]
    token = await login(client)
    saves = counting.saves
    response = await client.post("/set/exp", json=9999999999, headers=bearer(token))
    assert response.status == 400
    assert "'exp'" in await response.text()
    assert counting.saves == saves
    assert "Session-Token" not in response.headers
    assert await me(client, token) == ALICE


async def test_claims_sit_at_the_top_level_and_bookkeeping_in_one_private_claim() -> None:
    secret = secrets.token_bytes(32)
    store = JWTStore(secret, issuer=ISSUER, audience=AUDIENCE)
    session = JWTSession()
    session["sub"] = "alice"
    session.max_age = 900
    session.flash("welcome")
    now = int(time.time())
    token = await store.save(None, store.dump(session, JSON, now), ttl=900, namespace=NS)
    assert token is not None
    decoded = pyjwt.decode(token, secret, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
    private = decoded.pop(PRIVATE_CLAIM)
    assert set(private) == {"s", "c", "a", "m", "f"}
    assert (private["c"], private["a"], private["m"], private["f"]) == (
        session.created,
        now,
        900,
        ["welcome"],
    )
    assert decoded["exp"] - decoded["iat"] == 900
    assert set(decoded) == {"sub", "exp", "iat", "jti", "iss", "aud"}
    header = pyjwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "kid": header["kid"], "typ": "session+jwt"}


# -- interoperability with PyJWT -----------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_a_token_we_issue_decodes_with_pyjwt(algorithm: str, aiohttp_client: Any) -> None:
    key = private_key(algorithm)
    store = JWTStore(key, algorithm=algorithm, issuer=ISSUER, audience=AUDIENCE)
    client = await aiohttp_client(api_app(store))
    token = await login(client)
    decoded = pyjwt.decode(
        token, verify_key(key), algorithms=[algorithm], audience=AUDIENCE, issuer=ISSUER
    )
    private = decoded.pop(PRIVATE_CLAIM)
    registered = {name: decoded.pop(name) for name in ("exp", "iat", "jti", "iss", "aud")}
    assert decoded == ALICE["data"]  # the session's data, exactly
    assert registered["iss"] == ISSUER and registered["aud"] == AUDIENCE
    assert registered["exp"] > registered["iat"] >= private["c"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_a_token_pyjwt_minted_opens_as_a_session(algorithm: str, aiohttp_client: Any) -> None:
    key = private_key(algorithm)
    store = JWTStore(key, algorithm=algorithm, issuer=ISSUER, audience=AUDIENCE)
    client = await aiohttp_client(api_app(store))
    minted = mint(claims(sub="bob", roles=["admin"], iss=ISSUER, aud=AUDIENCE), key, algorithm)
    assert await me(client, minted) == {"data": {"sub": "bob", "roles": ["admin"]}, "new": False}
    # A write re-issues it as our token, which PyJWT still reads.
    response = await client.post("/set/team", json="blue", headers=bearer(minted))
    reissued = response.headers["Session-Token"]
    decoded = pyjwt.decode(
        reissued, verify_key(key), algorithms=[algorithm], audience=AUDIENCE, issuer=ISSUER
    )
    assert (decoded["sub"], decoded["team"]) == ("bob", "blue")


async def test_a_pyjwt_token_without_exp_is_refused() -> None:
    secret = secrets.token_bytes(32)
    store = JWTStore(secret)
    assert await opened(store, mint({"sub": "bob"}, secret, "HS256")) is None
    assert await opened(store, mint(claims(sub="bob"), secret, "HS256"))


# -- expiry ---------------------------------------------------------------------------------------


async def test_exp_is_the_idle_timeout_from_the_write(aiohttp_client: Any) -> None:
    secret = secrets.token_bytes(32)
    client = await aiohttp_client(api_app(JWTStore(secret), max_age=900))
    decoded = pyjwt.decode(await login(client), secret, algorithms=["HS256"])
    assert decoded["exp"] - decoded["iat"] == 900


async def test_exp_never_passes_the_absolute_timeout(aiohttp_client: Any, clock: FakeClock) -> None:
    secret = secrets.token_bytes(32)
    app = api_app(JWTStore(secret), idle_timeout=600, absolute_timeout=1000, touch_interval=60)
    client = await aiohttp_client(app)
    token = await login(client)
    lenient: Any = {"verify_exp": False, "verify_iat": False}  # the fake clock runs ahead
    created = pyjwt.decode(token, secret, algorithms=["HS256"], options=lenient)
    clock.advance(500)
    response = await client.get("/me", headers=bearer(token))  # a refresh re-issues it
    refreshed = response.headers["Session-Token"]
    decoded = pyjwt.decode(refreshed, secret, algorithms=["HS256"], options=lenient)
    assert decoded["exp"] == created["iat"] + 1000  # not 500 + 600
    assert decoded[PRIVATE_CLAIM]["s"] == created[PRIVATE_CLAIM]["s"]  # the same session


async def test_an_expired_token_opens_a_fresh_session(
    aiohttp_client: Any, clock: FakeClock
) -> None:
    client = await aiohttp_client(api_app(JWTStore(secrets.token_bytes(32)), max_age=300))
    token = await login(client)
    clock.advance(299)
    assert await me(client, token) == ALICE
    clock.advance(1)
    assert await me(client, token) == FRESH


async def test_leeway_accepts_a_token_just_past_exp_and_iat_just_ahead() -> None:
    secret = secrets.token_bytes(32)
    t = int(time.time())
    late = mint(claims(sub="bob", exp=t - 5, iat=t - 100), secret, "HS256")
    early = mint(claims(sub="bob", iat=t + 5), secret, "HS256")
    assert await opened(JWTStore(secret), late) is None
    assert await opened(JWTStore(secret), early) is None
    assert await opened(JWTStore(secret, leeway=10), late) is not None
    assert await opened(JWTStore(secret, leeway=10), early) is not None


# -- hostile tokens: each opens a fresh session, never a 500, never a log line with the token ----


@dataclass
class Keys:
    """The hostile suite's stores: one per algorithm family, with issuer and audience."""

    secret: bytes
    ed: Ed25519PrivateKey
    ec: ec.EllipticCurvePrivateKey
    rsa: rsa.RSAPrivateKey

    def store(self, family: str) -> JWTStore:
        key, algorithm = {
            "hs": (self.secret, "HS256"),
            "ed": (self.ed, "EdDSA"),
            "ec": (self.ec, "ES256"),
            "rsa": (self.rsa, "RS256"),
        }[family]
        return JWTStore(key, algorithm=algorithm, issuer=ISSUER, audience=AUDIENCE)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        secrets.token_bytes(32),
        Ed25519PrivateKey.generate(),
        ec.generate_private_key(ec.SECP256R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def ok(**extra: Any) -> dict[str, Any]:
    """Claims that would open, apart from what ``extra`` changes."""
    values = claims(sub="mallory", iss=ISSUER, aud=AUDIENCE)
    values.update(extra)
    return {k: v for k, v in values.items() if v is not None}


def hs(keys: Keys, header: dict[str, Any] | str, payload: dict[str, Any] | str | bytes) -> str:
    return forge(header, payload, keys.secret, "HS256")


def kid(keys: Keys, family: str = "hs") -> str:
    value: str = keys.store(family)._keys[0].kid
    return value


def tamper(token: str, part: int, change: Callable[[str], str]) -> str:
    parts = token.split(".")
    parts[part] = change(parts[part])
    return ".".join(parts)


def reencode(change: Callable[[dict[str, Any]], None]) -> Callable[[str], str]:
    def apply(segment: str) -> str:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        change(value)
        return b64(json.dumps(value).encode())

    return apply


def confusion(keys: Keys, family: str) -> str:
    """HS256 keyed with the server's public key, as the classic attack sends it."""
    pem = public_pem({"ed": keys.ed, "ec": keys.ec, "rsa": keys.rsa}[family])
    header = b64(json.dumps({"alg": "HS256", "typ": SESSION_TYPE}).encode())
    payload = b64(json.dumps(ok()).encode())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def unsigned(keys: Keys, alg: str) -> str:
    header = b64(json.dumps({"alg": alg, "typ": SESSION_TYPE}).encode())
    return f"{header}.{b64(json.dumps(ok()).encode())}."


def flip_last_byte(segment: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    raw[-1] ^= 1
    return b64(bytes(raw))


def non_canonical(segment: str) -> str:
    """The same bytes with a low, unused bit set in the last character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(segment) % 4 != 0, "needs a segment with unused bits"
    return segment[:-1] + alphabet[alphabet.index(segment[-1]) | 1]


def genuine(keys: Keys, family: str = "hs", /, **extra: Any) -> str:
    store = keys.store(family)
    key = {"hs": keys.secret, "ed": keys.ed, "ec": keys.ec, "rsa": keys.rsa}[family]
    return forge(
        {"alg": store.algorithm, "kid": kid(keys, family), "typ": SESSION_TYPE},
        ok(**extra),
        key,
        store.algorithm,
    )


def signed_by_a_stranger() -> str:
    """EdDSA, signed by a key we do not hold, naming that key's thumbprint as its kid."""
    stranger = Ed25519PrivateKey.generate()
    stranger_kid = JWTStore(stranger, algorithm="EdDSA").jwks()["keys"][0]["kid"]
    return forge(
        {"alg": "EdDSA", "kid": stranger_kid, "typ": SESSION_TYPE}, ok(), stranger, "EdDSA"
    )


# Every header below says "session+jwt", so that each case is refused for its own reason.
HS_HEADER = {"alg": "HS256", "typ": SESSION_TYPE}


def with_nested(document: dict[str, Any], depth: int) -> str:
    """``document`` as JSON text, plus a member holding lists that bring it ``depth`` deep."""
    return json.dumps(document)[:-1] + ',"x":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def nested_payload(depth: int) -> Callable[[Keys], str]:
    return lambda k: hs(k, HS_HEADER, with_nested(ok(), depth))


def nested_header(depth: int) -> Callable[[Keys], str]:
    return lambda k: hs(k, with_nested(HS_HEADER, depth), ok())


#: (family of the store under attack, builder of the hostile token)
def _bound_since(bound: Any) -> Callable[[Keys], str]:
    """A genuine token of ours whose private claim says it is bound since ``bound``."""
    return lambda k: genuine(
        k, **{PRIVATE_CLAIM: {"s": "x", "c": int(time.time()), "a": int(time.time()), "b": bound}}
    )


HOSTILE: dict[str, tuple[str, Callable[[Keys], str]]] = {
    "alg-none": ("hs", lambda k: unsigned(k, "none")),
    "alg-None": ("hs", lambda k: unsigned(k, "None")),
    "alg-none-on-an-eddsa-store": ("ed", lambda k: unsigned(k, "none")),
    "alg-none-with-a-signature": ("hs", lambda k: unsigned(k, "none") + b64(b"x" * 32)),
    "alg-hs512-with-the-same-secret": (
        "hs",
        lambda k: forge({"alg": "HS512", "typ": SESSION_TYPE}, ok(), k.secret + k.secret, "HS512"),
    ),
    "alg-hs384-where-hs256-is-configured": (
        "hs",
        lambda k: forge(
            {"alg": "HS384", "typ": SESSION_TYPE}, ok(), k.secret + k.secret[:16], "HS384"
        ),
    ),
    "alg-rs256-signed-with-an-attacker-key": (
        "rsa",
        lambda k: mint(ok(), private_key("RS256"), "RS256"),
    ),
    "alg-es256-on-an-eddsa-store": (
        "ed",
        lambda k: mint(ok(), private_key("ES256"), "ES256"),
    ),
    "confusion-hs256-with-the-rsa-public-key": ("rsa", lambda k: confusion(k, "rsa")),
    "confusion-hs256-with-the-ec-public-key": ("ec", lambda k: confusion(k, "ec")),
    "confusion-hs256-with-the-ed25519-public-key": ("ed", lambda k: confusion(k, "ed")),
    "tampered-header-alg": (
        "hs",
        lambda k: tamper(genuine(k), 0, reencode(lambda h: h.update(alg="HS512"))),
    ),
    "tampered-header-extra-member": (
        "hs",
        lambda k: tamper(genuine(k), 0, reencode(lambda h: h.update(cty="JWT"))),
    ),
    "tampered-payload-sub": (
        "hs",
        lambda k: tamper(genuine(k), 1, reencode(lambda c: c.update(sub="admin"))),
    ),
    "tampered-payload-exp": (
        "ed",
        lambda k: tamper(genuine(k, "ed"), 1, reencode(lambda c: c.update(exp=c["exp"] + DAY))),
    ),
    "tampered-signature-hs256": ("hs", lambda k: tamper(genuine(k), 2, flip_last_byte)),
    "tampered-signature-eddsa": ("ed", lambda k: tamper(genuine(k, "ed"), 2, flip_last_byte)),
    "tampered-signature-es256": ("ec", lambda k: tamper(genuine(k, "ec"), 2, flip_last_byte)),
    "tampered-signature-rs256": ("rsa", lambda k: tamper(genuine(k, "rsa"), 2, flip_last_byte)),
    "signature-truncated": ("ed", lambda k: tamper(genuine(k, "ed"), 2, lambda s: s[:40])),
    "signature-empty": ("hs", lambda k: tamper(genuine(k), 2, lambda s: "")),
    "signature-non-canonical-base64": ("hs", lambda k: tamper(genuine(k), 2, non_canonical)),
    "signature-with-padding": ("hs", lambda k: genuine(k) + "="),
    "payload-an-array": ("hs", lambda k: hs(k, HS_HEADER, json.dumps([ok()]))),
    "payload-a-string": ("hs", lambda k: hs(k, HS_HEADER, '"admin"')),
    "payload-a-number": ("hs", lambda k: hs(k, HS_HEADER, "42")),
    "payload-null": ("hs", lambda k: hs(k, HS_HEADER, "null")),
    "payload-not-json": ("hs", lambda k: hs(k, HS_HEADER, b"\x00\xffnot json")),
    "payload-nan": ("hs", lambda k: hs(k, HS_HEADER, json.dumps(ok(score=float("nan"))))),
    "payload-deeply-nested": (
        "hs",
        lambda k: hs(k, HS_HEADER, json.dumps(ok())[:-1] + ',"x":' + "[" * 2000 + "]" * 2000 + "}"),
    ),
    # One level past MAX_DEPTH (the claims object is the first level), then the depths at
    # which Python's parser does (3.11) or does not (3.12+) give up by itself.
    **{
        f"payload-nested-{depth}": (
            "hs",
            nested_payload(depth),
        )
        for depth in (MAX_DEPTH + 1, 1000, 2500)
    },
    "payload-nested-objects": (
        "ed",
        lambda k: forge(
            {"alg": "EdDSA", "kid": kid(k, "ed"), "typ": SESSION_TYPE},
            json.dumps(ok())[:-1] + ',"x":' + '{"a":' * 1500 + "1" + "}" * 1501,
            k.ed,
            "EdDSA",
        ),
    ),
    **{
        f"header-nested-{depth}": (
            "hs",
            nested_header(depth),
        )
        for depth in (MAX_DEPTH + 1, 1000)
    },
    "duplicate-claim-sub": (
        "hs",
        lambda k: hs(k, HS_HEADER, json.dumps(ok())[:-1] + ',"sub":"admin"}'),
    ),
    "duplicate-claim-exp": (
        "hs",
        lambda k: hs(k, HS_HEADER, json.dumps(ok())[:-1] + f',"exp":{int(time.time()) + DAY}}}'),
    ),
    "duplicate-member-nested": (
        "hs",
        lambda k: hs(k, HS_HEADER, json.dumps(ok())[:-1] + ',"roles":{"a":1,"a":2}}'),
    ),
    "duplicate-header-alg": (
        "hs",
        lambda k: hs(k, '{"alg":"none","alg":"HS256","typ":"session+jwt"}', ok()),
    ),
    "header-not-an-object": ("hs", lambda k: hs(k, '["HS256"]', ok())),
    "header-crit": ("hs", lambda k: hs(k, {**HS_HEADER, "crit": ["exp"]}, ok())),
    "header-b64-false": ("hs", lambda k: hs(k, {**HS_HEADER, "b64": False}, ok())),
    "kid-unknown": ("hs", lambda k: hs(k, {**HS_HEADER, "kid": "not-a-key-we-hold"}, ok())),
    "kid-not-a-string": ("hs", lambda k: hs(k, {**HS_HEADER, "kid": 0}, ok())),
    "kid-of-another-key": ("ed", lambda k: signed_by_a_stranger()),
    "expired": ("hs", lambda k: genuine(k, exp=int(time.time()) - 1)),
    "exp-missing": ("hs", lambda k: genuine(k, exp=None)),
    "exp-a-string": ("hs", lambda k: genuine(k, exp=str(int(time.time()) + 600))),
    "exp-true": ("hs", lambda k: genuine(k, exp=True)),
    "nbf-in-the-future": ("hs", lambda k: genuine(k, nbf=int(time.time()) + 60)),
    "iat-in-the-future": ("hs", lambda k: genuine(k, iat=int(time.time()) + 60)),
    "iss-wrong": ("hs", lambda k: genuine(k, iss="https://evil.example")),
    "iss-missing": ("hs", lambda k: genuine(k, iss=None)),
    "aud-wrong": ("hs", lambda k: genuine(k, aud="other-api")),
    "aud-missing": ("hs", lambda k: genuine(k, aud=None)),
    "aud-list-without-us": ("hs", lambda k: genuine(k, aud=["a", "b"])),
    "jti-not-a-string": ("hs", lambda k: genuine(k, jti=7)),
    "private-claim-malformed": ("hs", lambda k: genuine(k, **{PRIVATE_CLAIM: {"s": 1}})),
    "private-claim-from-the-future": (
        "hs",
        lambda k: genuine(
            k,
            **{PRIVATE_CLAIM: {"s": "x", "c": int(time.time()) + DAY, "a": int(time.time()) + DAY}},
        ),
    ),
    "private-claim-idle-expired": (
        "hs",
        lambda k: genuine(
            k,
            **{
                PRIVATE_CLAIM: {
                    "s": "x",
                    "c": int(time.time()) - 20 * DAY,
                    "a": int(time.time()) - 15 * DAY,
                }
            },
        ),
    ),
    "private-claim-other-namespace": (
        "hs",
        lambda k: genuine(
            k,
            **{
                PRIVATE_CLAIM: {
                    "s": "x",
                    "c": int(time.time()),
                    "a": int(time.time()),
                    "n": "OTHER",
                }
            },
        ),
    ),
    **{
        # "b": since when the session is bound to its user (microseconds), checked against a
        # per-user cutoff: anything but a plain non-negative integer refuses the token.
        f"private-claim-bound-since-{name}": ("hs", _bound_since(bound))
        for name, bound in [
            ("negative", -1),
            ("a-string", "1"),
            ("true", True),
            ("a-float", 1.5),
            ("past-64-bits", 2**63),
            ("a-list", [1]),
        ]
    },
    "two-segments": ("hs", lambda k: genuine(k).rsplit(".", 1)[0]),
    "four-segments": ("hs", lambda k: genuine(k) + ".e30"),
    "json-serialization": (
        "hs",
        lambda k: json.dumps(
            dict(zip(("protected", "payload", "signature"), genuine(k).split("."), strict=True))
        ),
    ),
    "over-8kb": ("hs", lambda k: genuine(k, pad="x" * MAX_TOKEN_BYTES)),
}


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="aiohttp_sessionkit")
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    return caplog


async def test_genuine_tokens_built_like_the_hostile_ones_open(keys: Keys) -> None:
    """Control: the tokens the tampered cases start from open, so a refusal is the case's."""
    for family in ("hs", "ed", "ec", "rsa"):
        session = await opened(keys.store(family), genuine(keys, family))
        assert session is not None and dict(session) == {"sub": "mallory"}
    minted = mint(ok(), keys.secret, "HS256")  # no kid: the first key
    assert await opened(keys.store("hs"), minted) is not None
    padded = genuine(keys, pad="x" * (MAX_TOKEN_BYTES * 3 // 4 - 400))
    assert len(padded) <= MAX_TOKEN_BYTES and await opened(keys.store("hs"), padded) is not None


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_token_opens_nothing_in_the_store(keys: Keys, case: str) -> None:
    family, build = HOSTILE[case]
    assert await opened(keys.store(family), build(keys)) is None


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_token_is_a_fresh_session_never_a_500_never_logged(
    aiohttp_client: Any, keys: Keys, logs: pytest.LogCaptureFixture, case: str
) -> None:
    family, build = HOSTILE[case]
    token = build(keys)
    counting = CountingStore(keys.store(family))
    # aiohttp's own limit (8190 bytes a header) would refuse an 8 KB token before us.
    server = TestServer(api_app(counting))  # type: ignore[arg-type]
    await server.start_server(max_field_size=3 * MAX_TOKEN_BYTES)
    client = await aiohttp_client(server)
    response = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200
    assert await response.json() == FRESH
    assert "Session-Token" not in response.headers
    response = await client.post("/set/x", json=1, headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200
    fresh = response.headers["Session-Token"]
    assert fresh != token and await me(client, fresh) == {"data": {"x": 1}, "new": False}
    assert counting.deletes == 0
    assert not [r for r in logs.records if r.levelno >= logging.ERROR]
    for record in logs.records:
        message = record.getMessage()
        for part in (token, *token.split(".")):
            assert len(part) < 12 or part not in message, f"logged: {message[:80]}"


async def test_a_token_nested_to_the_depth_limit_opens(keys: Keys) -> None:
    """Control for the payload-nested cases: MAX_DEPTH levels, claims object included."""
    store = keys.store("hs")
    at_limit = hs(keys, HS_HEADER, with_nested(ok(), MAX_DEPTH))
    header_at_limit = hs(keys, with_nested(HS_HEADER, MAX_DEPTH), ok())
    for token in (at_limit, header_at_limit):
        session = await opened(store, token)
        assert session is not None and session["sub"] == "mallory"
    deep: dict[str, Any] = {}
    level = deep
    for _ in range(30):
        level["a"] = level = {}
    session = await opened(store, genuine(keys, config=deep))
    assert session is not None and session["config"] == deep


async def test_a_session_nested_past_the_depth_limit_is_never_issued() -> None:
    store = JWTStore(secrets.token_bytes(32))
    session = JWTSession()
    session["x"] = json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)  # one more with the claims
    with pytest.raises(SerializationError, match="nested deeper than 64"):
        await store.save(None, store.dump(session, JSON, int(time.time())), ttl=60, namespace=NS)
    # A flash message sits three deep (claims, private claim, list of flashes).
    flashed = JWTSession()
    flashed.flash(json.loads("[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)))
    with pytest.raises(SerializationError, match="nested deeper than 64"):
        await store.save(None, store.dump(flashed, JSON, int(time.time())), ttl=60, namespace=NS)
    flashed = JWTSession()
    flashed.flash(json.loads("[" * (MAX_DEPTH - 3) + "]" * (MAX_DEPTH - 3)))
    token = await store.save(
        None, store.dump(flashed, JSON, int(time.time())), ttl=60, namespace=NS
    )
    assert token is not None and await opened(JWTStore(store._keys[0].sign), token) is not None


# -- tokens minted elsewhere: typed, with iat, bound to the default name (RFC 8725 3.11) ----------

TEN_YEARS = 3650 * DAY


def typed(keys: Keys, typ: Any = SESSION_TYPE, /, **extra: Any) -> str:
    """A token signed with the store's secret, as another service would mint it, no ``_sk``."""
    header: dict[str, Any] = {"alg": "HS256", "kid": kid(keys)}
    if typ is not None:
        header["typ"] = typ
    return forge(header, ok(**extra), keys.secret, "HS256")


def now_s() -> int:
    return int(time.time())


#: name -> (the session name it is presented under, builder). Each is signed with the store's
#: own key and passes every other check: only what the name says is wrong with it.
FOREIGN: dict[str, tuple[str, Callable[[Keys], str]]] = {
    "typ-missing": (NS, lambda k: typed(k, None)),
    "typ-JWT": (NS, lambda k: typed(k, "JWT")),
    "typ-jwt-lowercase": (NS, lambda k: typed(k, "jwt")),
    "typ-application-jwt": (NS, lambda k: typed(k, "application/jwt")),
    "typ-at+jwt": (NS, lambda k: typed(k, "at+jwt")),
    "typ-application-at+jwt": (NS, lambda k: typed(k, "application/at+jwt")),
    "typ-id-token": (NS, lambda k: typed(k, "id_token+jwt")),
    "typ-empty": (NS, lambda k: typed(k, "")),
    "typ-session+jwt-with-a-space": (NS, lambda k: typed(k, "session+jwt ")),
    "typ-session+jwt-with-parameters": (NS, lambda k: typed(k, "session+jwt; v=1")),
    "typ-a-list": (NS, lambda k: typed(k, [SESSION_TYPE])),
    "typ-null": (NS, lambda k: forge('{"alg":"HS256","typ":null}', ok(), k.secret, "HS256")),
    "pyjwt-default-header": (NS, lambda k: pyjwt.encode(ok(), k.secret, algorithm="HS256")),
    "iat-missing": (NS, lambda k: typed(k, iat=None)),
    "iat-missing-ten-year-exp": (NS, lambda k: typed(k, iat=None, exp=now_s() + TEN_YEARS)),
    "iat-missing-with-jti": (NS, lambda k: typed(k, iat=None, jti="unsubscribe-42")),
    "iat-a-string": (NS, lambda k: typed(k, iat=str(now_s()))),
    "iat-true": (NS, lambda k: typed(k, iat=True)),
    "iat-in-the-future": (NS, lambda k: typed(k, iat=now_s() + 120)),
    "iat-in-the-future-ten-year-exp": (
        NS,
        lambda k: typed(k, iat=now_s() + 400 * DAY, exp=now_s() + TEN_YEARS),
    ),
    "iat-past-the-idle-timeout": (NS, lambda k: typed(k, iat=now_s() - 2 * DAY)),
    "iat-past-the-absolute-timeout-ten-year-exp": (
        NS,
        lambda k: typed(k, iat=now_s() - 31 * DAY, exp=now_s() + TEN_YEARS),
    ),
    "iat-1000-days-ago-ten-year-exp": (
        NS,
        lambda k: typed(k, iat=now_s() - 1000 * DAY, exp=now_s() + TEN_YEARS),
    ),
    "other-session-name": ("ADMIN_SESSION", lambda k: typed(k)),
    "other-session-name-untyped": ("ADMIN_SESSION", lambda k: typed(k, None)),
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
async def test_foreign_token_opens_nothing_in_the_store(keys: Keys, case: str) -> None:
    name, build = FOREIGN[case]
    assert await opened(keys.store("hs"), build(keys), namespace=name) is None


@pytest.mark.parametrize("case", sorted(FOREIGN))
async def test_foreign_token_is_a_fresh_session_never_a_500_never_logged(
    aiohttp_client: Any, keys: Keys, logs: pytest.LogCaptureFixture, case: str
) -> None:
    name, build = FOREIGN[case]
    token = build(keys)
    app = api_app(keys.store("hs"), cookie_name=name, idle_timeout=DAY, absolute_timeout=30 * DAY)
    client = await aiohttp_client(app)
    response = await client.get("/me", headers=bearer(token))
    assert response.status == 200
    assert await response.json() == FRESH
    assert "Session-Token" not in response.headers
    response = await client.post("/set/x", json=1, headers=bearer(token))
    fresh = response.headers["Session-Token"]
    assert fresh != token and await me(client, fresh) == {"data": {"x": 1}, "new": False}
    assert not [r for r in logs.records if r.levelno >= logging.ERROR]
    for record in logs.records:
        for part in (token, *token.split(".")):
            assert len(part) < 12 or part not in record.getMessage()


async def test_a_foreign_token_opens_when_typed_with_iat_under_the_default_name(
    keys: Keys,
) -> None:
    """Control for FOREIGN: the same tokens, with what the case took away, open."""
    store = keys.store("hs")
    for typ in (SESSION_TYPE, "application/session+jwt", "Session+JWT"):
        session = await opened(store, typed(keys, typ))
        assert session is not None and dict(session) == {"sub": "mallory"}
    ten_years = typed(keys, iat=now_s() - 3600, exp=now_s() + TEN_YEARS)
    assert await opened(store, ten_years) is not None
    assert await opened(store, typed(keys), namespace="ADMIN_SESSION") is None
    # For another name, the issuer mints the private claim with "n", as we do.
    private = {"s": "minted-1", "c": now_s(), "a": now_s(), "n": "ADMIN_SESSION"}
    named = typed(keys, **{PRIVATE_CLAIM: private})
    assert await opened(store, named, namespace="ADMIN_SESSION") is not None
    assert await opened(store, named) is None


async def test_accept_untyped_opens_a_jwt_without_typ_but_never_another_type(keys: Keys) -> None:
    store = JWTStore(keys.secret, issuer=ISSUER, audience=AUDIENCE, accept_untyped=True)
    typ: Any
    for typ in (None, "JWT", "jwt", "application/jwt", SESSION_TYPE):
        assert await opened(store, typed(keys, typ)) is not None, typ
    assert await opened(store, pyjwt.encode(ok(), keys.secret, algorithm="HS256")) is not None
    for typ in ("at+jwt", "application/at+jwt", "", [SESSION_TYPE]):
        assert await opened(store, typed(keys, typ)) is None, typ
    assert await opened(store, typed(keys, None, iat=None)) is None  # iat stays required
    assert await opened(store, typed(keys, None), namespace="ADMIN_SESSION") is None


@pytest.mark.parametrize("value", [1, "yes", None])
def test_accept_untyped_must_be_a_bool(value: object) -> None:
    with pytest.raises(ConfigurationError, match="accept_untyped"):
        JWTStore(secrets.token_bytes(32), accept_untyped=value)  # type: ignore[arg-type]


async def test_a_foreign_token_times_out_from_its_iat_not_from_the_request(
    aiohttp_client: Any, clock: FakeClock
) -> None:
    """An "unsubscribe" token with a ten-year exp, typed as a session: the timeouts end it."""
    secret = secrets.token_bytes(32)
    app = api_app(JWTStore(secret), idle_timeout=DAY, absolute_timeout=30 * DAY)
    client = await aiohttp_client(app)
    t = clock.now
    minted = mint({"sub": "bob", "iat": t, "exp": t + TEN_YEARS}, secret, "HS256")
    assert (await me(client, minted))["data"] == {"sub": "bob"}  # day 0
    clock.advance(DAY + 1)
    assert await me(client, minted) == FRESH  # idle since iat, though never presented
    clock.advance(999 * DAY)
    assert await me(client, minted) == FRESH  # day 1000
    # Re-issued while young, the session keeps iat as its creation: the absolute timeout.
    clock.now = t
    reissued = (await client.post("/set/n", json=1, headers=bearer(minted))).headers[
        "Session-Token"
    ]
    decoded = pyjwt.decode(reissued, secret, algorithms=["HS256"], options={"verify_iat": False})
    assert decoded[PRIVATE_CLAIM]["c"] == t
    assert decoded["exp"] <= t + 30 * DAY


async def test_our_tokens_say_session_jwt_in_their_header() -> None:
    for algorithm in ALGORITHMS:
        token = await issue(JWTStore(private_key(algorithm), algorithm=algorithm), {"a": 1})
        assert pyjwt.get_unverified_header(token)["typ"] == SESSION_TYPE


# -- keys: rotation, kid, JWKS ---------------------------------------------------------------------


async def test_rotation_old_tokens_still_open_and_new_ones_use_the_new_key() -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    before = JWTStore(old, algorithm="EdDSA")
    token = await issue(before, {"sub": "alice"})
    after = JWTStore([new, old], algorithm="EdDSA")
    session = await opened(after, token)
    assert session is not None and dict(session) == {"sub": "alice"}
    reissued = await issue(after, {"sub": "alice"})
    new_kid = after.jwks()["keys"][0]["kid"]
    assert pyjwt.get_unverified_header(reissued)["kid"] == new_kid
    pyjwt.decode(reissued, new.public_key(), algorithms=["EdDSA"])
    retired = JWTStore(new, algorithm="EdDSA")
    assert await opened(retired, token) is None  # the old key is gone: so are its tokens
    assert await opened(retired, reissued) is not None


async def test_a_token_without_kid_is_checked_against_the_first_key() -> None:
    first, second = secrets.token_bytes(32), secrets.token_bytes(32)
    store = JWTStore([first, second])
    assert await opened(store, mint(claims(sub="a"), first, "HS256"))
    assert await opened(store, mint(claims(sub="a"), second, "HS256")) is None
    with_kid = mint(claims(sub="a"), second, "HS256", kid=store._keys[1].kid)
    assert await opened(store, with_kid) is not None


async def test_a_new_key_shows_in_the_jwks_before_it_signs_anything() -> None:
    current, upcoming = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    store = JWTStore([current, upcoming], algorithm="EdDSA")
    kids = [key["kid"] for key in store.jwks()["keys"]]
    upcoming_kid = JWTStore(upcoming, algorithm="EdDSA").jwks()["keys"][0]["kid"]
    assert kids[1] == upcoming_kid
    token = await issue(store, {"sub": "alice"})
    assert pyjwt.get_unverified_header(token)["kid"] == kids[0]  # still signed by the current


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "RS256"])
async def test_jwks_handler_serves_keys_that_verify_our_tokens(
    aiohttp_client: Any, algorithm: str
) -> None:
    store = JWTStore(private_key(algorithm), algorithm=algorithm, audience=AUDIENCE)
    app = api_app(store)
    app.router.add_get("/.well-known/jwks.json", jwks_handler(store))
    client = await aiohttp_client(app)
    token = await login(client)
    response = await client.get("/.well-known/jwks.json")
    assert response.status == 200
    assert response.content_type == "application/jwk-set+json"
    key_set = pyjwt.PyJWKSet.from_dict(await response.json())
    served = key_set[pyjwt.get_unverified_header(token)["kid"]]
    decoded = pyjwt.decode(token, served.key, algorithms=[algorithm], audience=AUDIENCE)
    assert decoded["sub"] == "alice"
    for jwk in (await response.json())["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(jwk)  # public parts only
        assert (jwk["alg"], jwk["use"]) == (algorithm, "sig")


def test_jwks_refuses_hmac_algorithms() -> None:
    store = JWTStore(secrets.token_bytes(32))
    with pytest.raises(ConfigurationError, match="must never be published"):
        store.jwks()
    with pytest.raises(ConfigurationError, match="must never be published"):
        jwks_handler(store)


# -- a verify-only store (public keys) -----------------------------------------------------------


@pytest.fixture
async def issuer_and_reader(aiohttp_client: Any) -> tuple[Any, Any]:
    key = Ed25519PrivateKey.generate()
    issuing = await aiohttp_client(api_app(JWTStore(key, algorithm="EdDSA")))
    reading = await aiohttp_client(
        api_app(JWTStore(public_pem(key), algorithm="EdDSA"), touch_interval=60)
    )
    return issuing, reading


async def test_a_public_key_store_reads_the_sessions_the_private_one_issues(
    issuer_and_reader: tuple[Any, Any],
) -> None:
    issuing, reading = issuer_and_reader
    token = await login(issuing)
    assert await me(reading, token) == ALICE


async def test_a_public_key_store_refuses_changes_with_a_clear_error(
    issuer_and_reader: tuple[Any, Any],
) -> None:
    issuing, reading = issuer_and_reader
    token = await login(issuing)
    response = await reading.post("/set/x", json=1, headers=bearer(token))
    assert response.status == 409
    assert "holds only public keys" in await response.text()
    assert "Session-Token" not in response.headers
    assert await me(issuing, token) == ALICE


def test_every_change_to_a_read_only_session_raises() -> None:
    session = ReadOnlySession(data={"sub": "alice"}, new=False, flashes=["hi"])
    changes: list[Callable[[], object]] = [
        lambda: session.__setitem__("x", 1),
        lambda: session.__delitem__("sub"),
        lambda: session.pop("sub"),
        lambda: session.update(x=1),
        lambda: session.setdefault("y", 2),
        session.clear,
        session.changed,
        session.invalidate,
        session.regenerate,
        lambda: session.flash("x"),
        session.pop_flashes,
        lambda: setattr(session, "max_age", 10),
    ]
    for change in changes:
        with pytest.raises(ReadOnlySessionError):
            change()
    assert dict(session) == {"sub": "alice"} and not session.is_dirty


async def test_a_public_key_store_refresh_never_issues_a_token(
    issuer_and_reader: tuple[Any, Any], clock: FakeClock
) -> None:
    issuing, reading = issuer_and_reader
    token = await login(issuing)
    clock.advance(120)  # past touch_interval: a writable store would re-issue now
    response = await reading.get("/me", headers=bearer(token))
    assert (await response.json())["data"] == ALICE["data"]
    assert "Session-Token" not in response.headers


async def test_a_read_only_store_cannot_issue_a_token() -> None:
    key = Ed25519PrivateKey.generate()
    store = JWTStore(key.public_key(), algorithm="EdDSA")
    assert store.session_class is ReadOnlySession and store.read_only
    draft = store.dump(Session(data={"sub": "x"}), JSON, int(time.time()))
    with pytest.raises(ReadOnlySessionError, match="issue a token"):
        await store.save(None, draft, ttl=60, namespace=NS)


# -- revocation ----------------------------------------------------------------------------------


async def test_without_revocation_a_copied_token_outlives_the_logout(aiohttp_client: Any) -> None:
    """The documented limit: only exp ends a copy of the token."""
    client = await aiohttp_client(api_app(JWTStore(secrets.token_bytes(32))))
    token = await login(client)
    response = await client.post("/logout", headers=bearer(token))
    assert response.headers["Session-Token"] == ""
    assert await me(client, token) == ALICE


async def test_logout_revokes_every_copy_of_the_token(aiohttp_client: Any) -> None:
    store = JWTStore(secrets.token_bytes(32), revocation=MemoryStore())
    client = await aiohttp_client(api_app(store))
    token = await login(client)
    response = await client.post("/logout", headers=bearer(token))
    assert response.headers["Session-Token"] == ""
    assert await me(client, token) == FRESH


@pytest.mark.parametrize("route", ["/regenerate", "/new"])
async def test_regenerate_and_new_session_revoke_the_old_token(
    aiohttp_client: Any, route: str
) -> None:
    store = JWTStore(secrets.token_bytes(32), revocation=MemoryStore())
    client = await aiohttp_client(api_app(store))
    token = await login(client)
    response = await client.post(route, headers=bearer(token))
    assert await me(client, token) == FRESH
    if route == "/regenerate":
        assert await me(client, response.headers["Session-Token"]) == ALICE


async def test_logging_out_with_any_copy_kills_the_whole_session(
    aiohttp_client: Any, clock: FakeClock
) -> None:
    store = JWTStore(secrets.token_bytes(32), revocation=MemoryStore())
    client = await aiohttp_client(api_app(store, touch_interval=60))
    first = await login(client)
    response = await client.post("/set/n", json=1, headers=bearer(first))
    second = response.headers["Session-Token"]
    clock.advance(100)
    third = (await client.get("/me", headers=bearer(second))).headers["Session-Token"]
    assert len({first, second, third}) == 3
    await client.post("/logout", headers=bearer(first))  # the oldest copy
    for token in (first, second, third):
        assert await me(client, token) == FRESH
    clock.advance(DAY)  # the later copies stay dead until their own exp, and after
    assert await me(client, third) == FRESH


async def test_the_high_s_twin_of_a_logged_out_es256_token_does_not_open(
    aiohttp_client: Any,
) -> None:
    """(r, s) -> (r, n - s) makes a second string that verifies; it is the same token."""
    key = ec.generate_private_key(ec.SECP256R1())
    client = await aiohttp_client(
        api_app(JWTStore(key, algorithm="ES256", revocation=MemoryStore()))
    )
    # Minted elsewhere without jti: the deny list names it by what the signature covers.
    minted = mint({"sub": "bob", "iat": now_s(), "exp": now_s() + 600}, key, "ES256")
    twin = es256_twin(minted)
    assert pyjwt.decode(twin, key.public_key(), algorithms=["ES256"])["sub"] == "bob"
    assert (await me(client, minted))["data"] == {"sub": "bob"}
    await client.post("/logout", headers=bearer(minted))
    assert await me(client, minted) == FRESH
    assert await me(client, twin) == FRESH


async def test_both_forms_of_an_es256_signature_open_the_same_session_and_ours_are_low_s(
    keys: Keys,
) -> None:
    # PyJWT leaves s as it comes, so about half of a foreign issuer's ES256 tokens are
    # high-S: refusing them would refuse valid sessions at random. Revocation does not
    # depend on the spelling (see the twin test above).
    store = keys.store("ec")
    tokens = [await issue(store, {"i": i}) for i in range(40)]
    assert all(s_of(token) <= P256_ORDER // 2 for token in tokens)
    twin = es256_twin(tokens[0])
    assert s_of(twin) > P256_ORDER // 2
    assert pyjwt.decode(
        twin, keys.ec.public_key(), algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER
    )
    original = await opened(store, tokens[0])
    assert original is not None
    fresh_store = keys.store("ec")  # not from the cache: verified
    from_twin = await opened(fresh_store, twin)
    assert from_twin is not None and dict(from_twin) == dict(original) == {"i": 0}


async def test_a_foreign_token_without_jti_is_deny_listed_by_its_signing_input() -> None:
    secret = secrets.token_bytes(32)
    deny_list = MemoryStore()
    store = JWTStore(secret, revocation=deny_list)
    minted = mint({"sub": "bob", "iat": now_s(), "exp": now_s() + 600}, secret, "HS256")
    await store.delete(minted, namespace=NS)
    signing_input = minted.rsplit(".", 1)[0].encode()
    sid = b64(hashlib.sha256(signing_input).digest()[:16])
    assert await deny_list.get(store._deny_key(sid)) is not None


def clocked(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> MemoryStore:
    """A MemoryStore whose records expire by the test's clock (it keeps monotonic time)."""
    from types import SimpleNamespace

    from aiohttp_sessionkit.stores import memory

    monkeypatch.setattr(memory, "time", SimpleNamespace(monotonic=clock))
    return MemoryStore()


async def test_logout_with_a_shorter_lived_newest_copy_still_kills_the_older_copy(
    aiohttp_client: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JWTStore(secrets.token_bytes(32), revocation=clocked(monkeypatch, clock))
    app = api_app(store, idle_timeout=7 * DAY, absolute_timeout=30 * DAY)

    async def shorten(request: web.Request) -> web.Response:
        (await get_session(request)).max_age = 3600
        return web.Response(text="short")

    app.router.add_post("/short", shorten)
    client = await aiohttp_client(app)
    older = await login(client)  # valid for 7 days
    newest = (await client.post("/short", headers=bearer(older))).headers["Session-Token"]
    assert pyjwt.decode(newest, options={"verify_signature": False})["exp"] == clock.now + 3600
    await client.post("/logout", headers=bearer(newest))
    assert await me(client, older) == FRESH
    clock.advance(2 * DAY)  # the newest copy has long expired; the older one has not
    assert await me(client, older) == FRESH
    clock.advance(5 * DAY - 60)
    assert await me(client, older) == FRESH


@pytest.mark.parametrize("first", ["knows-the-timeout", "does-not"])
async def test_a_second_logout_extends_the_deny_entry_and_never_shortens_it(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    secret = secrets.token_bytes(32)
    deny_list = clocked(monkeypatch, clock)
    # Two processes on one deny list: one has restored a session (so it knows the absolute
    # timeout, 30 days), the other has not (its entry lasts as long as the token could).
    knows = JWTStore(secret, revocation=deny_list)
    blind = JWTStore(secret, revocation=deny_list)
    older = await issue(knows, {"sub": "alice"}, ttl=7 * DAY)
    session = await opened(knows, older)  # restored: knows learns the 30 days
    assert session is not None
    draft = knows.dump(session, JSON, clock.now)
    newest = await knows.save(older, draft, ttl=3600, namespace=NS)
    assert newest is not None
    order = [knows, blind] if first == "knows-the-timeout" else [blind, knows]
    for process in order:
        await process.delete(newest, namespace=NS)
    clock.advance(2 * DAY)
    assert await blind.load(older, namespace=NS) is None
    assert await knows.load(older, namespace=NS) is None


@pytest.mark.parametrize("first", ["knows-the-timeout", "does-not"])
async def test_every_server_store_keeps_the_later_end_of_two_logouts(
    server_store_factory: StoreFactory, first: str
) -> None:
    """The same two logouts as above, on every server store: the entry ends at the later
    of the two ends (the session's creation plus 30 days), whichever came first."""
    secret = secrets.token_bytes(32)
    deny_list = cast(ServerStore, server_store_factory())
    knows = JWTStore(secret, revocation=deny_list)
    blind = JWTStore(secret, revocation=cast(ServerStore, server_store_factory()))
    token = await issue(knows, {"sub": "alice"}, ttl=3600)
    session = await opened(knows, token)
    assert session is not None
    order = [knows, blind] if first == "knows-the-timeout" else [blind, knows]
    for process in order:
        await process.delete(token, namespace=NS)
    sid = pyjwt.decode(token, secret, algorithms=["HS256"])[PRIVATE_CLAIM]["s"]
    entry = await deny_list.get(knows._deny_key(sid))
    assert entry is not None and int(entry) == session.created + 30 * DAY


async def test_a_write_to_a_session_revoked_meanwhile_is_not_saved() -> None:
    deny_list = MemoryStore()
    store = JWTStore(secrets.token_bytes(32), revocation=deny_list)
    token = await issue(store, {"sub": "alice"})
    session = await opened(store, token)
    assert session is not None
    session["n"] = 1
    await JWTStore(store._keys[0].sign, revocation=deny_list).delete(token, namespace=NS)
    draft = store.dump(session, JSON, int(time.time()))
    assert await store.save(token, draft, ttl=600, namespace=NS) is None


async def test_a_forged_token_cannot_put_anything_on_the_deny_list() -> None:
    deny_list = MemoryStore()
    store = JWTStore(secrets.token_bytes(32), revocation=deny_list)
    forged = mint(claims(sub="x"), secrets.token_bytes(32), "HS256")
    await store.delete(forged, namespace=NS)
    assert len(deny_list) == 0


async def test_every_server_store_keeps_a_deny_list_shared_by_its_processes(
    server_store_factory: StoreFactory,
) -> None:
    secret = secrets.token_bytes(32)
    here = JWTStore(secret, revocation=cast(ServerStore, server_store_factory()))
    there = JWTStore(secret, revocation=cast(ServerStore, server_store_factory()))
    token = await issue(here, {"sub": "alice"})
    other = await issue(here, {"sub": "bob"})
    assert await opened(there, token) is not None
    await here.delete(token, namespace=NS)
    assert await opened(there, token) is None
    assert await opened(here, token) is None
    assert await opened(there, other) is not None  # only that session


@pytest.fixture
async def redis_deny_lists(redis_server: ServerHandle) -> AsyncIterator[list[RedisStore]]:
    """Two RedisStore clients on one prefix: two processes sharing one deny list."""
    prefix = f"deny-{uuid.uuid4().hex[:8]}:"
    stores = [RedisStore(redis_server.url, key_prefix=prefix) for _ in range(2)]
    yield stores
    for store in stores:
        await store.close()


async def test_a_revocation_reaches_every_process_sharing_the_redis_store(
    aiohttp_client: Any, redis_deny_lists: list[RedisStore]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    first = await aiohttp_client(
        api_app(JWTStore(key, algorithm="ES256", revocation=redis_deny_lists[0]))
    )
    second = await aiohttp_client(
        api_app(JWTStore(key, algorithm="ES256", revocation=redis_deny_lists[1]))
    )
    token = await login(first)
    assert await me(second, token) == ALICE
    await second.post("/logout", headers=bearer(token))
    assert await me(first, token) == FRESH


async def test_the_deny_list_entry_lives_as_long_as_the_token_could(
    redis_server: ServerHandle, redis_deny_lists: list[RedisStore]
) -> None:
    deny_list = redis_deny_lists[0]
    store = JWTStore(secrets.token_bytes(32), revocation=deny_list)
    token = await issue(store, {"sub": "alice"}, ttl=900)
    await store.delete(token, namespace=NS)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        keys = [k async for k in raw.scan_iter(match=deny_list.key_prefix + "*")]
        assert len(keys) == 1
        assert 890 <= await raw.ttl(keys[0]) <= 900
    finally:
        await raw.aclose()


async def test_concurrent_revocation_checks_share_one_redis_round_trip(
    redis_server: ServerHandle, redis_deny_lists: list[RedisStore]
) -> None:
    store = JWTStore(secrets.token_bytes(32), revocation=redis_deny_lists[0])
    tokens = [await issue(store, {"n": i}) for i in range(20)]
    await store.delete(tokens[0], namespace=NS)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await store.load(tokens[1], namespace=NS)  # connect first: the batch is what we count
        stats: dict[str, Any] = await raw.info("commandstats")
        before = int(stats.get("cmdstat_mget", {}).get("calls", 0))
        loaded = await asyncio.gather(*(store.load(t, namespace=NS) for t in tokens))
        stats = await raw.info("commandstats")
        assert int(stats["cmdstat_mget"]["calls"]) == before + 1
    finally:
        await raw.aclose()
    assert loaded[0] is None and all(payload is not None for payload in loaded[1:])


async def test_an_unreachable_revocation_store_answers_503_never_an_unchecked_session(
    aiohttp_client: Any,
) -> None:
    secret = secrets.token_bytes(32)
    token = await issue(JWTStore(secret), {"sub": "alice"})
    down = RedisStore(f"redis://127.0.0.1:{free_port()}/0", key_prefix="down:")
    store = JWTStore(secret, revocation=down)
    with pytest.raises(StoreUnavailable):
        await store.load(token, namespace=NS)
    client = await aiohttp_client(api_app(store, store_timeout=10))
    response = await client.get("/me", headers=bearer(token))
    assert response.status == 503
    assert "Session-Token" not in response.headers


# -- transports and save_session -----------------------------------------------------------------


async def test_the_cookie_transport_carries_the_jwt(aiohttp_client: Any) -> None:
    secret = secrets.token_bytes(32)
    store = JWTStore(secret, revocation=MemoryStore())
    client = await aiohttp_client(
        api_app(store, transport=CookieTransport()), cookie_jar=DummyCookieJar()
    )
    response = await client.post("/login")
    token = (await response.json())["token"]
    assert response.cookies[NS].value == token
    assert pyjwt.decode(token, secret, algorithms=["HS256"])["sub"] == "alice"
    cookie = {"Cookie": f"{NS}={token}"}
    assert await (await client.get("/me", headers=cookie)).json() == ALICE
    await client.post("/logout", headers=cookie)
    assert await (await client.get("/me", headers=cookie)).json() == FRESH


async def test_a_session_too_large_for_a_cookie_fails_loudly_with_the_cookie_transport(
    aiohttp_client: Any,
) -> None:
    app = api_app(JWTStore(secrets.token_bytes(32)), transport=CookieTransport())
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    response = await client.post("/login")
    cookie = {"Cookie": f"{NS}={(await response.json())['token']}"}
    response = await client.post("/set/blob", json="x" * 5000, headers=cookie)
    assert response.status == 500
    assert "Set-Cookie" not in response.headers


async def test_a_session_too_large_for_any_header_is_refused_when_saved() -> None:
    store = JWTStore(secrets.token_bytes(32))
    session = JWTSession()
    session["blob"] = "x" * MAX_TOKEN_BYTES
    with pytest.raises(SerializationError, match="8192-byte limit"):
        await store.save(None, store.dump(session, JSON, int(time.time())), ttl=60, namespace=NS)


async def test_a_token_opens_only_under_the_name_it_was_issued_for() -> None:
    store = JWTStore(secrets.token_bytes(32))
    session = JWTSession()
    session["sub"] = "alice"
    draft = store.dump(session, JSON, int(time.time()))
    other = await store.save(None, draft, ttl=60, namespace="OTHER")
    default = await store.save(None, draft, ttl=60, namespace=NS)
    assert other is not None and default is not None
    assert await opened(store, other, namespace="OTHER") is not None
    assert await opened(store, other, namespace=NS) is None
    assert await opened(store, default, namespace="OTHER") is None


# -- restore() and decode_payload agree on the clock ---------------------------------------------

EQ_IDLE = 3600
EQ_ABSOLUTE = 86_400


@pytest.mark.parametrize(
    ("created", "accessed", "max_age", "tolerance"),
    [
        pytest.param(-100, -10, None, 60, id="fresh"),
        pytest.param(-100, -EQ_IDLE, None, 60, id="idle-exactly-reached"),
        pytest.param(-EQ_IDLE - 100, -EQ_IDLE - 1, None, 60, id="idle-passed"),
        pytest.param(-EQ_ABSOLUTE, -10, None, 60, id="absolute-exactly-reached"),
        pytest.param(-EQ_ABSOLUTE - 1, -10, None, 60, id="absolute-passed"),
        pytest.param(-100, -60, 60, 60, id="max-age-exactly-reached"),
        pytest.param(-100, -61, 60, 60, id="max-age-passed"),
        pytest.param(-2 * EQ_IDLE, -EQ_IDLE - 1, 2 * EQ_IDLE, 60, id="max-age-over-idle"),
        pytest.param(-EQ_ABSOLUTE - 1, -10, 2 * EQ_ABSOLUTE, 60, id="max-age-not-absolute"),
        pytest.param(-10, -20, None, 60, id="accessed-before-created"),
        pytest.param(-100, 60, None, 60, id="future-within-tolerance"),
        pytest.param(-100, 61, None, 60, id="future-past-tolerance"),
        pytest.param(30, 30, None, 60, id="created-in-the-future"),
        pytest.param(0, 0, None, 0, id="now-with-no-tolerance"),
        pytest.param(-100, 1, None, 0, id="future-with-no-tolerance"),
    ],
)
def test_jwt_restore_and_decode_payload_agree_on_every_clock_case(
    clock: FakeClock, created: int, accessed: int, max_age: int | None, tolerance: int
) -> None:
    """Both rebuild a session through the session layer's clock checks and constructor: the
    same stored times open (with the same fields) or fail in both."""
    t = clock.now
    session = Session(
        data={"sub": "ada", "n": [1, 2]},
        created=t + created,
        max_age=max_age,
        flashes=["saved"],
    )
    timeouts: dict[str, Any] = {
        "idle_timeout": EQ_IDLE,
        "absolute_timeout": EQ_ABSOLUTE,
        "clock_skew_tolerance": tolerance,
    }
    from_payload = decode_payload(
        encode_payload(session, JSON, t + accessed), JSON, identity=None, **timeouts
    )
    store = JWTStore(secrets.token_bytes(32))
    token = store.save_nowait(None, store.dump(session, JSON, t + accessed), 10 * DAY, NS)
    assert token is not None
    # A store that never saw this token: restore gets what a strict parse of it gives.
    reader = JWTStore(store._keys[0].sign)
    from_token = reader.restore(reader.load_nowait(token, NS), JSON, identity=None, **timeouts)

    assert (from_payload is None) == (from_token is None)
    if from_payload is not None and from_token is not None:
        # is_dirty before pop_flashes, which marks the session changed
        fields = [
            (s.created, s.last_access, s.max_age, s.new, s.is_dirty, dict(s), s.pop_flashes())
            for s in (from_payload, from_token)
        ]
        expected = (t + created, t + accessed, max_age, False, False, dict(session), ["saved"])
        assert fields == [expected, expected]
