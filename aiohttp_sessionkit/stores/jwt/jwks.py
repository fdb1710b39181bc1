"""A JSON Web Key Set (RFC 7517) as the keys of a verify-only JWTStore.

A verifier is usually given what the issuer publishes at ``/.well-known/jwks.json``: a
document ``{"keys": [JWK, ...]}``. :func:`keys_from_jwks` keeps the keys that fit the
store's one algorithm and turns them into ``cryptography`` public keys, which the store then
prepares like any other key. The document is parsed strictly: it is configuration, so a
mistake fails at construction with a message, never per request.

A verifier that should follow the issuer's key rotation without a restart is given a
:class:`JWKSEndpoint` instead: the store fetches the set when the application starts,
refreshes it every ``refresh_interval`` seconds, and refetches it early when a token names a
``kid`` it does not know, at most once per ``min_refetch_interval``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

try:
    from jwt.algorithms import get_default_algorithms
    from jwt.exceptions import InvalidKeyError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'JWTStore needs PyJWT with its crypto extra: pip install "aiohttp-sessionkit[jwt]"'
    ) from exc

import aiohttp

from ...exceptions import ConfigurationError
from ...masking import mask_credentials
from ...serializers import check_depth

log = logging.getLogger("aiohttp_sessionkit")

__all__ = ["JWKSEndpoint", "KeyFollower", "keys_from_jwks"]

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


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class JWKSEndpoint:
    """Where a verify-only :class:`~aiohttp_sessionkit.JWTStore` fetches its keys.

    ``JWTStore(JWKSEndpoint("https://issuer.example/.well-known/jwks.json"),
    algorithm="EdDSA")`` fetches the set at application startup (a failure is logged, and
    tokens open once a fetch succeeds), refreshes it every ``refresh_interval`` seconds, and
    refetches it when a token names an unknown ``kid`` (a key the issuer just rotated in),
    at most once per ``min_refetch_interval`` seconds: a client cannot make the store fetch
    more often. A token whose key is not known yet opens a fresh session, like any token that
    does not verify. The URL must be ``https://`` (plain ``http://`` only on loopback, for
    tests and sidecars); a response over ``max_bytes``, not JSON, or not a usable key set is
    refused and the keys in use are kept. A fetch gives up after ``timeout`` seconds.
    """

    url: str
    refresh_interval: float = 3600.0
    min_refetch_interval: float = 60.0
    max_bytes: int = 64 * 1024
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.url, str):
            raise ConfigurationError(f"JWKSEndpoint(url={self.url!r}): give the URL as a string")
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigurationError(
                f"JWKSEndpoint({self.url!r}): give an https:// URL of the issuer's key set"
            )
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ConfigurationError(
                f"JWKSEndpoint({self.url!r}): keys fetched over plain http can be replaced on "
                "the way, and then anyone can mint sessions; use https:// (http:// is "
                "accepted on loopback only)"
            )
        for name in ("refresh_interval", "min_refetch_interval", "timeout"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigurationError(f"JWKSEndpoint({name}={value!r}): give seconds above 0")
        if (
            isinstance(self.max_bytes, bool)
            or not isinstance(self.max_bytes, int)
            or not (1024 <= self.max_bytes <= 1024 * 1024)
        ):
            raise ConfigurationError(
                f"JWKSEndpoint(max_bytes={self.max_bytes!r}): give bytes from 1024 to 1048576"
            )
        if self.min_refetch_interval > self.refresh_interval:
            raise ConfigurationError(
                "JWKSEndpoint: min_refetch_interval must not exceed refresh_interval"
            )


class KeyFollower:
    """Fetches a :class:`JWKSEndpoint` for one store: at start, every ``refresh_interval``,
    and early (rate-limited) on an unknown ``kid``. ``install`` receives each good document
    and raises :class:`ConfigurationError` for a set it cannot use."""

    def __init__(
        self, endpoint: JWKSEndpoint, install: Callable[[Mapping[str, Any]], None]
    ) -> None:
        self.endpoint = endpoint
        self._install = install
        self._client: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._fetching = False
        self._last_attempt = -math.inf

    async def start(self) -> None:
        if self._client is not None:
            return
        self._client = aiohttp.ClientSession()
        await self.fetch()
        self._spawn(self._refresh_forever())

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def unknown_kid(self) -> None:
        """A token named a key we do not have: refetch soon, unless one ran lately."""
        if self._client is None or self._fetching:
            return
        if time.monotonic() - self._last_attempt < self.endpoint.min_refetch_interval:
            return
        self._spawn(self.fetch())

    async def fetch(self) -> None:
        """Fetch and install the set; a failure is logged and the keys in use stay."""
        self._fetching = True
        self._last_attempt = time.monotonic()
        try:
            self._install(await self._document())
        except (aiohttp.ClientError, TimeoutError, ValueError, ConfigurationError) as exc:
            log.warning(
                "the JWKS at %s could not be used (%s: %s); keeping the keys in use",
                mask_credentials(self.endpoint.url),
                type(exc).__name__,
                exc,
            )
        finally:
            self._fetching = False

    async def _document(self) -> Mapping[str, Any]:
        endpoint = self.endpoint
        assert self._client is not None
        async with self._client.get(
            endpoint.url,
            timeout=aiohttp.ClientTimeout(total=endpoint.timeout),
            allow_redirects=False,  # a redirect could leave https or the issuer's host
        ) as response:
            if response.status != 200:
                raise ValueError(f"HTTP status {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(16 * 1024):
                body += chunk
                if len(body) > endpoint.max_bytes:
                    raise ValueError(f"the response is larger than max_bytes={endpoint.max_bytes}")
        document = json.loads(check_depth(body.decode("utf-8")))
        if not isinstance(document, dict):
            raise ValueError("the response is not a JSON object")
        return document

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.endpoint.refresh_interval)
            await self.fetch()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
