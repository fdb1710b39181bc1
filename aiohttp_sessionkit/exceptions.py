"""The exceptions aiohttp-sessionkit raises, as one small hierarchy."""

from __future__ import annotations

from .masking import mask_credentials

__all__ = [
    "ConfigurationError",
    "CookieTooLarge",
    "ReadOnlySessionError",
    "SerializationError",
    "SessionError",
    "SessionResponseError",
    "StoreContention",
    "StoreError",
    "StoreUnavailable",
]


class SessionError(Exception):
    """Base class of every error raised by aiohttp-sessionkit.

    Its message never shows a password: a store URL in it (the library's own text, or a
    driver's error quoted in it) has its credentials masked.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(mask_credentials(a) if isinstance(a, str) else a for a in args))


class ConfigurationError(SessionError, ValueError):
    """A setting is invalid; raised by ``setup()`` and store constructors, never per request."""


class SerializationError(SessionError, TypeError):
    """A session value cannot be serialized; the message names the offending key."""


class CookieTooLarge(SessionError):
    """The sealed session would not fit in a cookie (4096 bytes); nothing was sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the session cookie would be {size} bytes, over the {limit}-byte limit browsers "
            "accept; keep less in the session or use a server-side store (memory, Redis, "
            "PostgreSQL, MongoDB)"
        )
        self.size = size
        self.limit = limit


class ReadOnlySessionError(SessionError, RuntimeError):
    """A session of a store that holds only public keys was asked to change."""


class SessionResponseError(SessionError, RuntimeError):
    """A session change can no longer reach the client (the response was already sent)."""


class StoreError(SessionError):
    """A store failed in a way that is not a connectivity problem."""


class StoreUnavailable(StoreError):
    """The store cannot be reached: refused, timed out, or rejected our credentials.

    The middleware answers such a request with ``503 Service Unavailable`` and a
    ``Retry-After`` header, sends no ``Set-Cookie`` and leaves the client's cookie alone.
    """


class StoreContention(StoreUnavailable):
    """A merging update lost the race to other saves of the same session too many times.

    Answered like an unreachable store (503 with ``Retry-After``), having written nothing:
    the session keeps what the other requests saved, and a retry of this one merges again.
    """
