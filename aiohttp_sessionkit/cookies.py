"""Cookie parameters: secure defaults in one place, validated once, formatted fast."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .exceptions import ConfigurationError

__all__ = ["DEFAULT_COOKIE_NAME", "MAX_COOKIE_BYTES", "CookieParams"]

DEFAULT_COOKIE_NAME = "AIOHTTP_SESSION"
#: Browsers drop a cookie whose name and value exceed this many bytes.
MAX_COOKIE_BYTES = 4096

# RFC 6265 cookie-name is an RFC 7230 token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Path and Domain attribute values: visible ASCII without ';' and ',' (',' breaks header
# folding in some proxies) and without whitespace.
_ATTR_VALUE = re.compile(r"[!-+\--:<-~]+")
_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}
_DELETED = "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"


@dataclass(frozen=True, slots=True)
class CookieParams:
    """Name and attributes of the session cookie.

    ``secure=None`` means "auto": ``Secure`` is added when the request the handler saw is
    HTTPS (``request.secure``, after any scheme rewrite by a middleware that trusts a
    proxy's forwarded headers). Behind a proxy in production, use ``secure=True``.
    """

    name: str = DEFAULT_COOKIE_NAME
    max_age: int | None = None
    path: str = "/"
    domain: str | None = None
    secure: bool | None = None
    httponly: bool = True
    samesite: str | None = "Lax"
    _attrs: tuple[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ConfigurationError(
                f"cookie_name {name!r} is not a valid cookie name: use letters, digits and "
                "!#$%&'*+-.^_`|~ only (no spaces, ';', ',', '=', quotes or control characters), "
                'for example cookie_name="AIOHTTP_SESSION"'
            )
        if self.max_age is not None and (
            isinstance(self.max_age, bool) or not isinstance(self.max_age, int) or self.max_age <= 0
        ):
            raise ConfigurationError(
                f"max_age={self.max_age!r}: give a positive number of seconds, or None for a "
                "cookie that lasts until the browser closes"
            )
        _check_attr("path", self.path)
        if not self.path.startswith("/"):
            raise ConfigurationError(f"path={self.path!r} must start with '/', for example '/'")
        if self.domain is not None:
            _check_attr("domain", self.domain)
        samesite = self.samesite
        if samesite is not None:
            canonical = _SAMESITE.get(samesite.lower()) if isinstance(samesite, str) else None
            if canonical is None:
                raise ConfigurationError(
                    f"samesite={samesite!r}: use 'Lax' (the default), 'Strict', 'None', or "
                    "None to leave the attribute out"
                )
            object.__setattr__(self, "samesite", canonical)
        if self.secure is not None and not isinstance(self.secure, bool):
            raise ConfigurationError(f"secure={self.secure!r}: use True, False or None (auto)")
        # Browsers match the prefixes case-insensitively (RFC 6265bis), so do we.
        lowered = name.lower()
        if lowered.startswith(("__host-", "__secure-")):
            if self.secure is False:
                raise ConfigurationError(
                    f"a {name.split('-')[0]}- cookie must be Secure: drop secure=False "
                    "(or rename the cookie)"
                )
            object.__setattr__(self, "secure", True)
        if lowered.startswith("__host-") and (self.domain is not None or self.path != "/"):
            raise ConfigurationError(
                "a __Host- cookie must have no domain and path='/': remove domain= and path= "
                "(or drop the __Host- prefix)"
            )
        # Refused rather than Secure forced: with secure=None (auto) the cookie would lack
        # Secure on plain HTTP, and browsers drop it there without a word.
        if self.samesite == "None" and self.secure is not True:
            raise ConfigurationError(
                f"samesite='None' with secure={self.secure!r}: browsers reject SameSite=None "
                "without Secure; set secure=True (the cookie then never travels over plain "
                "HTTP) or choose samesite='Lax'"
            )
        attrs = f"; Path={self.path}"
        if self.domain is not None:
            attrs += f"; Domain={self.domain}"
        if self.httponly:
            attrs += "; HttpOnly"
        if self.samesite is not None:
            attrs += f"; SameSite={self.samesite}"
        object.__setattr__(self, "_attrs", (attrs, attrs + "; Secure"))

    def is_secure(self, request_is_secure: bool) -> bool:
        """Whether this response's cookie gets the Secure attribute."""
        return request_is_secure if self.secure is None else self.secure

    def header(self, value: str, *, max_age: int | None, secure: bool) -> str:
        """A Set-Cookie header value that stores ``value``."""
        attrs = self._attrs[secure]
        if max_age is None:
            return f"{self.name}={value}{attrs}"
        return f"{self.name}={value}; Max-Age={max_age}{attrs}"

    def deletion_header(self, *, secure: bool) -> str:
        """A Set-Cookie header value that deletes the cookie, with the attributes that set it.

        Browsers ignore a deletion of a ``__Host-``/``__Secure-`` cookie that lacks
        ``Secure``, and may keep the cookie when Path/Domain differ, so every attribute
        used for setting is repeated here.
        """
        return f'{self.name}=""{_DELETED}{self._attrs[secure]}'


def _check_attr(what: str, value: object) -> None:
    if not isinstance(value, str) or not _ATTR_VALUE.fullmatch(value):
        raise ConfigurationError(
            f"{what}={value!r} is not allowed in a cookie: no whitespace, ';', ',' or control "
            "characters"
        )
