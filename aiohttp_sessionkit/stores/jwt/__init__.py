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

Every token we issue says what it is in its header, ``"typ": "session+jwt"`` (explicit
typing, RFC 8725 section 3.11), and a token that does not say so is refused unless the store
was built with ``accept_untyped=True``: a JWT the same key signed for another purpose (an
unsubscribe link, an access token) is not a session. Every token must carry ``iat``.

Signatures and keys come from PyJWT's algorithm implementations; the parsing and the claim
checks are ours, because a session must refuse more than PyJWT's decoder does (duplicate
members, non-canonical signatures, oversized tokens) and must never raise on bad input.

The package's modules, by job: ``keys`` (key preparation, ``kid``, signing, the JWKS),
``jose`` (strict parsing of the header and the claims, the claim checks, base64, the HMAC
signer), ``jwks`` (a published key set as a verifier's keys, and following a JWKS URL),
``sessions`` (the session classes) and ``store`` (JWTStore and its cache of verified
tokens).
"""

from __future__ import annotations

from ...exceptions import ReadOnlySessionError
from .jose import MAX_TOKEN_BYTES, PRIVATE_CLAIM, RESERVED_CLAIMS, SESSION_TYPE
from .jwks import JWKSEndpoint
from .keys import ALGORITHMS, jwks_handler
from .sessions import JWTSession, ReadOnlySession
from .store import JWTStore

__all__ = [
    "ALGORITHMS",
    "MAX_TOKEN_BYTES",
    "PRIVATE_CLAIM",
    "RESERVED_CLAIMS",
    "SESSION_TYPE",
    "JWKSEndpoint",
    "JWTSession",
    "JWTStore",
    "ReadOnlySession",
    "ReadOnlySessionError",
    "jwks_handler",
]
