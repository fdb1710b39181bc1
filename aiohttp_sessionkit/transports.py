"""Transports: the session token in a cookie (browsers) or in a request header (API clients)."""

from __future__ import annotations

import logging
import re
from typing import ClassVar

from aiohttp import hdrs, web

from .abc import AbstractTransport
from .cookies import MAX_COOKIE_BYTES, CookieParams
from .exceptions import ConfigurationError, CookieTooLarge

__all__ = ["CookieTransport", "HeaderTransport", "presented_cookie"]
log = logging.getLogger("aiohttp_sessionkit")

# RFC 7230 token: header names and auth schemes.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 6750 b64token: what a bearer token may hold. Every token we issue (ids, sealed
# cookies, JWTs) fits; anything else is refused before it reaches a store.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class CookieTransport(AbstractTransport):
    """The token in the session cookie (the default): name and attributes from ``setup()``.

    The browser attaches the cookie to every request by itself, including requests that
    another site triggers: protect state-changing routes against CSRF (``SameSite=Lax``,
    the default, blocks cross-site POSTs in current browsers; a CSRF token covers the rest).
    """

    resend_unchanged: ClassVar[bool] = True

    @property
    def vary(self) -> str:
        return "Cookie"

    def read(self, request: web.Request, params: CookieParams) -> str | None:
        """The value of the one cookie called ``params.name``; None if absent, empty or
        ambiguous.

        Two cookies of one name (cookie tossing from a sibling subdomain, or a stale cookie
        on another Path) are ambiguous: neither is trusted. A ``__Host-`` name rules out
        tossing. Reads only this cookie instead of parsing every cookie in the header.
        """
        headers = request.headers.getall(hdrs.COOKIE, ())
        if not headers:
            return None
        name = params.name
        prefix = name + "="
        if len(headers) == 1:  # the common case, decided without splitting the header
            raw = headers[0]
            start = raw.find(prefix)
            if start < 0:
                return None
            # A cookie-string is split on ";" only (RFC 6265 section 5.4): our name must
            # start a cookie-pair, after ";" and optional whitespace, never after a space or
            # a comma inside another cookie's value ("tossed=x NAME=..." is one cookie).
            before = start
            while before and raw[before - 1] in " \t":
                before -= 1
            if raw.find(prefix, start + 1) < 0 and (before == 0 or raw[before - 1] == ";"):
                end = raw.find(";", start)
                return raw[start + len(prefix) : None if end < 0 else end].strip() or None
        values = [
            value
            for header in headers
            for key, sep, value in (part.partition("=") for part in header.split(";"))
            if sep and key.lstrip(" \t") == name
        ]
        if len(values) > 1:
            log.info(
                "%d %r cookies in one request; starting a new session", len(values), params.name
            )
            return None
        return values[0].strip() or None if values else None

    def issue(
        self, request: web.Request, params: CookieParams, token: str, *, max_age: int | None
    ) -> tuple[str, str]:
        # Browsers drop a cookie over 4096 bytes silently: fail loudly instead. The sealed
        # cookie store checks this itself; a JWT store cannot know which transport it feeds.
        size = len(params.name) + 1 + len(token)
        if size > MAX_COOKIE_BYTES:
            raise CookieTooLarge(size, MAX_COOKIE_BYTES)
        secure = params.is_secure(request.secure)
        return hdrs.SET_COOKIE, params.header(token, max_age=max_age, secure=secure)

    def clear(self, request: web.Request, params: CookieParams) -> tuple[str, str]:
        return hdrs.SET_COOKIE, params.deletion_header(secure=params.is_secure(request.secure))

    def __repr__(self) -> str:
        return "CookieTransport()"


class HeaderTransport(AbstractTransport):
    """The token in a request header, ``Authorization: Bearer <token>`` by default.

    For API, mobile and single-page-app clients that keep no cookies. Whenever the token
    the client must present changes, the response carries it in ``response_header``
    (``Session-Token``); after a logout that header is present and empty, telling the client
    to drop its token. No ``Set-Cookie`` is ever sent.

    ``scheme=None`` means the header holds the bare token (``X-Session-Token: <token>``).
    The scheme is matched case-insensitively (RFC 6750). A browser never attaches this
    header by itself, so the header transport needs no CSRF token.
    """

    explicit: ClassVar[bool] = True

    __slots__ = ("_prefix", "header", "response_header", "scheme")

    def __init__(
        self,
        *,
        header: str = hdrs.AUTHORIZATION,
        scheme: str | None = "Bearer",
        response_header: str = "Session-Token",
    ) -> None:
        for what, value in (("header", header), ("response_header", response_header)):
            if not isinstance(value, str) or not _TOKEN.fullmatch(value):
                raise ConfigurationError(
                    f"HeaderTransport({what}={value!r}): give a valid HTTP header name, for "
                    'example "Authorization" or "X-Session-Token"'
                )
        if response_header.lower() in ("set-cookie", "cookie", "vary", "cache-control"):
            raise ConfigurationError(
                f"HeaderTransport(response_header={response_header!r}) would clash with a "
                'header the session layer manages; use for example "Session-Token"'
            )
        if scheme is not None and (not isinstance(scheme, str) or not _TOKEN.fullmatch(scheme)):
            raise ConfigurationError(
                f"HeaderTransport(scheme={scheme!r}): give an authentication scheme such as "
                '"Bearer", or None when the header holds the bare token'
            )
        self.header = header
        self.scheme = scheme
        self.response_header = response_header
        self._prefix = None if scheme is None else scheme.lower() + " "

    @property
    def vary(self) -> str:
        return self.header

    def read(self, request: web.Request, params: CookieParams) -> str | None:
        values = request.headers.getall(self.header, ())
        if len(values) != 1:
            if values:
                log.info(
                    "%d %s headers in one request; starting a new session", len(values), self.header
                )
            return None
        value = values[0]
        prefix = self._prefix
        if prefix is not None:
            if value[: len(prefix)].lower() != prefix:
                return None
            value = value[len(prefix) :]
        value = value.strip(" ")
        if not value or _B64TOKEN.fullmatch(value) is None:
            return None
        return value

    def issue(
        self, request: web.Request, params: CookieParams, token: str, *, max_age: int | None
    ) -> tuple[str, str]:
        return self.response_header, token

    def clear(self, request: web.Request, params: CookieParams) -> tuple[str, str]:
        return self.response_header, ""

    def clash(self, other: AbstractTransport) -> str | None:
        """Two sessions cannot read tokens from the same header with the same scheme (each
        would be handed the other's token), nor hand out tokens in the same response
        header (the client could not tell them apart)."""
        if not isinstance(other, HeaderTransport):
            return None
        if self.header.lower() == other.header.lower() and self._prefix == other._prefix:
            scheme = "no scheme" if self.scheme is None else f"scheme {self.scheme!r}"
            return f"both read their token from the {self.header} header with {scheme}"
        if self.response_header.lower() == other.response_header.lower():
            return f"both send new tokens in the {self.response_header} response header"
        return None

    def __repr__(self) -> str:
        return (
            f"HeaderTransport(header={self.header!r}, scheme={self.scheme!r}, "
            f"response_header={self.response_header!r})"
        )


def presented_cookie(request: web.Request, name: str) -> str | None:
    """The value of the one cookie called ``name`` (see :meth:`CookieTransport.read`)."""
    return _COOKIE.read(request, CookieParams(name=name))


_COOKIE = CookieTransport()
