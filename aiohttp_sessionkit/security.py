"""aiohttp-security on our sessions: an identity policy with fixation defence built in.

Install with ``pip install "aiohttp-sessionkit[security]"``. Importing
``aiohttp_sessionkit`` never imports this module (nor aiohttp_security); import it
yourself::

    from aiohttp_security import setup as setup_security
    from aiohttp_sessionkit.security import SessionIdentityPolicy

    setup(app, store)
    setup_security(app, SessionIdentityPolicy(), MyAuthorizationPolicy())

Compared with aiohttp-security's own ``SessionIdentityPolicy`` (built on aiohttp-session):
``remember`` moves the session to a new id before storing the identity, so an id an
attacker planted or learned before login is worthless after it (upstream leaves this to
the application: aiohttp-security issue #473); ``forget`` invalidates the whole session
(the server record is deleted, the cookie expired or the header token emptied) instead of
removing one key and leaving the rest, and the id, alive.

Set up sessions with ``user_key`` equal to the policy's ``session_key`` and ``remember``
binds the session to the identity, so that a user's sessions can be listed and ended
(the "Sessions of a user" guide). After a password change, end the others::

    setup(app, store, user_key="AIOHTTP_SECURITY")
    setup_security(app, SessionIdentityPolicy(), MyAuthorizationPolicy())

    async def change_password(request):
        identity = await check_authorized(request)
        ...  # check the old password, store the new one
        await end_user_sessions(request, identity, keep_current=True)
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

try:
    from aiohttp_security.abc import AbstractIdentityPolicy
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'SessionIdentityPolicy needs aiohttp-security: pip install "aiohttp-sessionkit[security]"'
    ) from exc

from .api import get_session
from .exceptions import ConfigurationError

__all__ = ["SessionIdentityPolicy"]


class SessionIdentityPolicy(AbstractIdentityPolicy):
    """Keeps the logged-in identity in the session, under ``session_key``.

    ``cookie_name`` picks the session when ``setup`` was called more than once (default:
    the first one set up).
    """

    def __init__(
        self, session_key: str = "AIOHTTP_SECURITY", *, cookie_name: str | None = None
    ) -> None:
        if not isinstance(session_key, str) or not session_key:
            raise ConfigurationError(
                f"SessionIdentityPolicy(session_key={session_key!r}): give a non-empty str"
            )
        self._session_key = session_key
        self._cookie_name = cookie_name

    @property
    def session_key(self) -> str:
        """The session key the identity is stored under."""
        return self._session_key

    async def identify(self, request: web.Request) -> str | None:
        """The identity remembered in this request's session, or None."""
        session = await get_session(request, self._cookie_name)
        identity = session.get(self._session_key)
        return identity if isinstance(identity, str) else None

    async def remember(
        self, request: web.Request, response: web.StreamResponse, identity: str, **kwargs: Any
    ) -> None:
        """Store ``identity`` in the session, under a new session id.

        The session keeps its other data, but moves to a new id and its old record is
        deleted when the response goes out: an id known before login opens nothing after.
        With ``setup(..., user_key=...)`` set to this policy's ``session_key``, the new
        session is bound to ``identity`` as it is saved (and the old one unbound).
        The session middleware sets the new cookie (or header token) on the response the
        handler returns or raises, which should be ``response``.
        """
        session = await get_session(request, self._cookie_name)
        session.regenerate()
        session[self._session_key] = identity

    async def forget(self, request: web.Request, response: web.StreamResponse) -> None:
        """Log out: invalidate the whole session (record deleted, cookie expired)."""
        session = await get_session(request, self._cookie_name)
        session.invalidate()

    def __repr__(self) -> str:
        return f"<SessionIdentityPolicy session_key={self._session_key!r}>"
