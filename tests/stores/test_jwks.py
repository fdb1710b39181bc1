"""JWTStore built from a JSON Web Key Set: a verifier holds what the issuer publishes."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from aiohttp_sessionkit import ConfigurationError, JSONSerializer, JWTStore, MemoryStore
from aiohttp_sessionkit.stores.jwt.jwks import MAX_KEYS

NS = "AIOHTTP_SESSION"
ISSUER = "https://auth.example"


def private_key(algorithm: str) -> Any:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def issue(store: JWTStore, **data: Any) -> str:
    session = store.session_class()
    session.update(data)
    token = await store.save(
        None, store.dump(session, JSONSerializer(), session.created), ttl=300, namespace=NS
    )
    assert token is not None
    return token


async def opened_data(store: JWTStore, token: str) -> dict[str, Any] | None:
    opened = await store.load(token, namespace=NS)
    if opened is None:
        return None
    session = store.restore(
        opened, JSONSerializer(), identity=None, idle_timeout=300, absolute_timeout=300
    )
    return None if session is None else dict(session)


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "RS256"])
async def test_a_verifier_built_from_the_issuers_jwks_opens_its_tokens(algorithm: str) -> None:
    issuer = JWTStore(private_key(algorithm), algorithm=algorithm, issuer=ISSUER)
    verifier = JWTStore(issuer.jwks(), algorithm=algorithm, issuer=ISSUER)
    assert verifier.read_only
    token = await issue(issuer, sub="ada")
    assert await opened_data(verifier, token) == {"sub": "ada"}
    # Not a key that merely parses: a token from another key of the same kind is refused.
    stranger = JWTStore(private_key(algorithm), algorithm=algorithm, issuer=ISSUER)
    assert await opened_data(verifier, await issue(stranger, sub="eve")) is None


async def test_a_rotated_set_verifies_old_and_new_keys() -> None:
    old, new = private_key("EdDSA"), private_key("EdDSA")
    before = JWTStore(old, algorithm="EdDSA")
    after = JWTStore([new, old], algorithm="EdDSA")
    verifier = JWTStore(after.jwks(), algorithm="EdDSA")
    assert await opened_data(verifier, await issue(before, n=1)) == {"n": 1}
    assert await opened_data(verifier, await issue(after, n=2)) == {"n": 2}


async def test_keys_named_by_the_issuers_own_kid_are_found_by_it() -> None:
    key = private_key("EdDSA")
    public = jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    document = {"keys": [{**public, "kid": "2026-a", "use": "sig", "alg": "EdDSA"}]}
    verifier = JWTStore(document, algorithm="EdDSA")

    def minted(kid: str) -> str:
        return jwt.encode(
            {"sub": "ada", "iat": int(time.time()), "exp": 2**31},
            key,
            algorithm="EdDSA",
            headers={"kid": kid, "typ": "session+jwt"},  # a session token, typed (RFC 8725)
        )

    assert await opened_data(verifier, minted("2026-a")) == {"sub": "ada"}
    assert await opened_data(verifier, minted("2026-b")) is None  # a kid the set lacks


async def test_keys_for_other_algorithms_or_uses_are_skipped() -> None:
    ed = private_key("EdDSA")
    issuer = JWTStore(ed, algorithm="EdDSA")
    rsa_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private_key("RS256").public_key(), as_dict=True)
    enc_jwk = {
        **jwt.algorithms.OKPAlgorithm.to_jwk(private_key("EdDSA").public_key(), as_dict=True),
        "use": "enc",
    }
    document = {"keys": [rsa_jwk, enc_jwk, *issuer.jwks()["keys"]]}
    verifier = JWTStore(document, algorithm="EdDSA")
    assert await opened_data(verifier, await issue(issuer, sub="ada")) == {"sub": "ada"}
    assert len(verifier.jwks()["keys"]) == 1


def ed_jwk(**extra: Any) -> dict[str, Any]:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return {**jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True), **extra}


@pytest.mark.parametrize(
    ("document", "algorithm", "hint"),
    [
        pytest.param({}, "EdDSA", '{"keys": [JWK, ...]}', id="no-keys-member"),
        pytest.param({"keys": []}, "EdDSA", "at least one key", id="empty-set"),
        pytest.param({"keys": "abc"}, "EdDSA", '{"keys": [JWK, ...]}', id="keys-not-a-list"),
        pytest.param({"keys": ["abc"]}, "EdDSA", "a JWK is a JSON object", id="jwk-not-object"),
        pytest.param({"keys": [ed_jwk(d="AAAA")]}, "EdDSA", "private key material", id="private"),
        pytest.param(
            {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "EdDSA", "private key material", id="oct"
        ),
        pytest.param({"keys": [ed_jwk()]}, "HS256", "shared secret", id="hmac-algorithm"),
        pytest.param({"keys": [ed_jwk()]}, "ES256", "no ES256 signing key", id="wrong-kty"),
        pytest.param({"keys": [ed_jwk(alg="ES256")]}, "EdDSA", "no EdDSA", id="other-alg"),
        pytest.param({"keys": [ed_jwk(kid=7)]}, "EdDSA", "kid must be", id="kid-not-string"),
        pytest.param({"keys": [ed_jwk(x="short")]}, "EdDSA", "not a usable EdDSA", id="bad-x"),
        pytest.param(
            {"keys": [ed_jwk()] * (MAX_KEYS + 1)}, "EdDSA", f"at most {MAX_KEYS}", id="too-many"
        ),
    ],
)
def test_a_bad_jwks_fails_at_construction_saying_why(
    document: dict[str, Any], algorithm: str, hint: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        JWTStore(document, algorithm=algorithm)
    assert hint in str(caught.value)


async def test_a_verifier_honours_a_logout_only_through_the_shared_revocation_store() -> None:
    deny_list = MemoryStore()  # in production a RedisStore both services reach
    key = private_key("EdDSA")
    issuer = JWTStore(key, algorithm="EdDSA", revocation=deny_list)
    sharing = JWTStore(issuer.jwks(), algorithm="EdDSA", revocation=deny_list)
    alone = JWTStore(issuer.jwks(), algorithm="EdDSA")
    token = await issue(issuer, sub="ada")
    assert await opened_data(sharing, token) == await opened_data(alone, token) == {"sub": "ada"}
    await issuer.delete(token, namespace=NS)  # what invalidate() does at logout
    assert await opened_data(issuer, token) is None
    assert await opened_data(sharing, token) is None
    assert await opened_data(alone, token) == {"sub": "ada"}  # until its exp
