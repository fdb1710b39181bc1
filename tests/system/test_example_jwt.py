"""examples/jwt_app.py: login issues a JWT, another service verifies it from the JWKS alone."""

from __future__ import annotations

from typing import Any

import jwt as pyjwt
from aiohttp import DummyCookieJar

from examples import jwt_app


async def test_jwt_login_protected_route_jwks_and_revoking_logout(aiohttp_client: Any) -> None:
    client = await aiohttp_client(jwt_app.make_app(), cookie_jar=DummyCookieJar())
    assert (await client.get("/me")).status == 401
    response = await client.post("/login", json={"user": "ada", "password": "wrong"})
    assert response.status == 401
    response = await client.post("/login", json={"user": "ada", "password": "lovelace"})
    assert response.status == 200 and "Set-Cookie" not in response.headers
    token = (await response.json())["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert await (await client.get("/me", headers=auth)).json() == {
        "sub": "ada",
        "roles": ["admin"],
    }

    # Another service needs nothing but the published key set to read the token.
    key_set = pyjwt.PyJWKSet.from_dict(await (await client.get("/.well-known/jwks.json")).json())
    key = key_set[pyjwt.get_unverified_header(token)["kid"]].key
    claims = pyjwt.decode(
        token, key, algorithms=["EdDSA"], audience=jwt_app.AUDIENCE, issuer=jwt_app.ISSUER
    )
    assert (claims["sub"], claims["roles"]) == ("ada", ["admin"])
    assert claims["exp"] - claims["iat"] == 900

    response = await client.post("/logout", headers=auth)
    assert response.headers["Session-Token"] == ""
    assert (await client.get("/me", headers=auth)).status == 401  # the copy is revoked too
