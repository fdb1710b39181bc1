"""A bounded cache of what checking a presented token produced (cookie and JWT stores, and
the record keys of session ids)."""

from __future__ import annotations

from typing import Generic, TypeVar

from .exceptions import ConfigurationError

__all__ = ["VerifiedCache", "check_cache_size"]

_V = TypeVar("_V")


def check_cache_size(cache_size: object) -> int:
    """``cache_size`` as given, or a ConfigurationError that says what to give instead."""
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
        raise ConfigurationError(
            f"cache_size={cache_size!r}: give a whole number of tokens (0 turns the cache of "
            "verified tokens off)"
        )
    return cache_size


class VerifiedCache(dict[tuple[str, str], _V], Generic[_V]):
    """``(namespace, token) -> what verifying the token produced``, at most ``limit`` entries.

    A client presents the same token on every request until it changes, so a hit skips the
    cryptography. Only tokens that verified (or that the store itself issued) go in, keyed
    by the whole token and the session name: a hit is exactly as trustworthy as a
    verification. What depends on the clock (expiry) is never cached; the caller checks it
    on every request. A dict subclass, so that a lookup is a C-level ``get``.
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = check_cache_size(limit)

    def remember(self, key: tuple[str, str], value: _V) -> None:
        if len(self) >= self.limit:
            if not self.limit:
                return
            # Full: start over. Evicting the oldest entry one at a time costs a scan over
            # the dict's deleted slots on every write (its cost: docs/performance.md,
            # "Cookie store"); a clear is one step, and the next requests refill it.
            self.clear()
        self[key] = value
