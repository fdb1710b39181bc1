"""The session classes JWTStore hands to the session layer."""

from __future__ import annotations

from typing import Any, NoReturn

from ...exceptions import ReadOnlySessionError
from ...session import Session
from .jose import RESERVED_CLAIMS

__all__ = ["JWTSession", "ReadOnlySession"]


class JWTSession(Session):
    """A session whose data are the claims of a JWT.

    Setting a claim the library owns (``exp``, ``iat``, ``nbf``, ``jti``, ``iss``, ``aud``,
    ``_sk``) raises ``ValueError`` naming it, so a handler cannot forge its own expiry.
    """

    __slots__ = ("_sid",)

    def __init__(self, identity: str | None = None, **kwargs: Any) -> None:
        super().__init__(identity, **kwargs)
        self._sid: str | None = None
        for key in self._data:
            _check_claim_name(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(key, str):
            _check_claim_name(key)
        super().__setitem__(key, value)


def _check_claim_name(key: str) -> None:
    if key in RESERVED_CLAIMS:
        raise ValueError(
            f"session[{key!r}]: {key!r} is a claim the session library sets itself "
            f"(reserved: {', '.join(sorted(RESERVED_CLAIMS))}); use another key"
        )


def _read_only(action: str) -> NoReturn:
    raise ReadOnlySessionError(
        f"cannot {action}: this JWTStore holds only public keys, so it can verify tokens but "
        "not issue them; change the session in the service that holds the private key"
    )


class ReadOnlySession(JWTSession):
    """The session of a verify-only :class:`JWTStore`: any change raises ReadOnlySessionError."""

    __slots__ = ()

    def __setitem__(self, key: str, value: Any) -> None:
        _read_only(f"set session[{key!r}]")

    def __delitem__(self, key: str) -> None:
        _read_only(f"delete session[{key!r}]")

    def clear(self) -> None:
        if self._data:
            _read_only("clear the session")

    def changed(self) -> None:
        _read_only("mark the session changed")

    def invalidate(self) -> None:
        _read_only("invalidate the session")

    def regenerate(self) -> None:
        _read_only("regenerate the session")

    def flash(self, value: Any) -> None:
        _read_only("queue a flash message")

    def pop_flashes(self) -> list[Any]:
        if self._flashes:
            _read_only("pop flash messages")
        return []

    @property
    def max_age(self) -> int | None:
        """This session's lifetime in seconds; read-only here."""
        return self._max_age

    @max_age.setter
    def max_age(self, value: int | None) -> None:
        _read_only("change max_age")
