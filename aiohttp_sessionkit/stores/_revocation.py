"""What a client-side store's deny list holds: ended sessions, and per-user cutoff times.

``EncryptedCookieStore(revocation=...)`` and ``JWTStore(revocation=...)`` keep both in any
server store, as plain records of ASCII digits:

* a session (its lineage id, which every re-issue of its token keeps) ended by a logout,
  a login or ``end_session``: the entry holds when it may be forgotten, the last moment a
  token of that session could still open;
* a user whose sessions were all ended (``end_user_sessions``, OWASP ASVS 5.0 7.4.1): the
  entry holds the cutoff time; a token bound to that user whose session was born before it
  is refused. It lives as long as the absolute timeout, past which no such token opens.

Entries are only ever raised, never lowered, so two processes ending the same session or
user at once keep the later end.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, NoReturn

from .. import session as session_module
from ..abc import ServerStore
from ..exceptions import StoreError
from ..ids import record_key

__all__ = [
    "DenyListUsers",
    "bound_user",
    "cutoff_key",
    "is_handle",
    "keep_latest",
    "lifetime",
    "refused",
    "stored_number",
]

# Apart from the deny entries (whose keys each store derives itself) and from session
# records, if the application reuses one server store for several things.
_CUTOFF_NAMESPACE = "aiohttp_sessionkit.user-cutoff"
_HANDLE_SHAPE = re.compile(r"[0-9a-f]{64}")
# Fits every epoch second a 32-bit payload field can hold, and then some.
_MAX_DIGITS = 12


def bound_user(value: Any) -> str | None:
    """The user a session is bound to, from its ``session[user_key]``: a str as it is, an
    int in decimal (as the session layer normalises it); ``None`` for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def is_handle(value: object) -> bool:
    """True when ``value`` is shaped like a deny-list key (64 lowercase hex), the handle a
    client-side store gives a session: checked before it reaches the store."""
    return isinstance(value, str) and _HANDLE_SHAPE.fullmatch(value) is not None


def cutoff_key(namespace: str, user: str) -> str:
    """The key of ``user``'s cutoff entry under the session name ``namespace``: a hash, so
    that no user id is readable in the store."""
    return record_key(f"{_CUTOFF_NAMESPACE}\x00{namespace}", user)


def stored_number(entry: bytes | None) -> int:
    """The epoch seconds an entry holds; 0 for no entry, or anything we did not write."""
    return int(entry) if entry is not None and entry.isdigit() and len(entry) < _MAX_DIGITS else 0


async def refused(
    revocation: ServerStore, deny_key: str, user_cutoff_key: str | None, born: int
) -> bool:
    """True when a token may not open: its session is on the deny list, or it is bound to a
    user (``user_cutoff_key`` given) whose cutoff is later than ``born``.

    Both entries are read concurrently, through ``get`` so that they share a batching
    store's round trip with each other and with other requests' checks: a bound session
    costs no more waiting than an unbound one.
    """
    if user_cutoff_key is None:
        return await revocation.get(deny_key) is not None
    denied, cutoff = await asyncio.gather(
        revocation.get(deny_key), revocation.get(user_cutoff_key), return_exceptions=True
    )
    # return_exceptions: one failed read must not leave the other running unobserved.
    for result in (denied, cutoff):
        if isinstance(result, BaseException):
            raise result
    assert not isinstance(cutoff, BaseException)
    return denied is not None or stored_number(cutoff) > born


async def keep_latest(revocation: ServerStore, key: str, value: int, ttl: int) -> None:
    """Make the entry ``key`` hold at least ``value`` and live ``ttl`` seconds, never less.

    A create-only write; when an entry is there already, it is replaced only if it holds an
    earlier value (a later value always lives longer). Three rounds cover an entry that
    expires or is replaced between the calls.
    """
    entry, ttl = str(value).encode("ascii"), max(ttl, 1)
    for _ in range(3):
        if await revocation.create(key, entry, ttl):
            return
        current = await revocation.get(key)
        if current is not None:
            if stored_number(current) >= value:
                return
            if await revocation.update(key, entry, ttl):
                return


def lifetime(absolute_timeout: int) -> int:
    """The longest a session of a store can live: the absolute timeout the session layer
    told it (``set_absolute_timeout``), or, for a store never set up, the default."""
    if absolute_timeout:
        return absolute_timeout
    from ..api import DEFAULT_ABSOLUTE_TIMEOUT  # the session layer's default, defined once

    return DEFAULT_ABSOLUTE_TIMEOUT


class DenyListUsers:
    """A user's sessions on a client-side store with a deny list (a mixin of
    EncryptedCookieStore and JWTStore): no index, since the sessions live in the clients,
    but a per-user cutoff that ends them all, and a handle per session that ends one.

    The store sets ``revocation`` (its deny list, or None) and ``_absolute_timeout``, and
    implements ``handle`` (a session's handle is its deny-list key).
    """

    revocation: ServerStore | None
    _absolute_timeout: int

    @property
    def user_cutoff(self) -> bool:
        """True with a deny list: a user's sessions end by a per-user cutoff time."""
        return self.revocation is not None

    def set_absolute_timeout(self, seconds: int) -> None:
        self._absolute_timeout = max(self._absolute_timeout, seconds)

    async def bind_user(
        self,
        token: str,
        user: str,
        *,
        namespace: str,
        created: int,
        until: int,
        last_seen: Any,
        limit: int | None = None,
        user_agent: str | None = None,
        remote: str | None = None,
    ) -> int:
        """Nothing to do: the binding travels in the token itself."""
        return 0

    async def unbind_user(self, handle: str, user: str, *, namespace: str) -> None:
        """Nothing to do: the binding travels in the token itself."""

    async def user_records(self, user: str, *, namespace: str, last_seen: Any) -> NoReturn:
        """Cannot be done: the sessions live in the clients. Raises StoreError."""
        raise StoreError(
            f"{type(self).__name__} cannot list a user's sessions: they live in the clients, "
            "not on a server. Listing needs a server-side store (memory, Redis, PostgreSQL, "
            "SQLAlchemyStore, MongoDB, memcached); with revocation=..., ending a user's "
            "sessions works"
        )

    async def load_handle(self, handle: str, *, namespace: str) -> Any | None:
        """``None``: a handle names a session on the deny list; it cannot open one."""
        return None

    async def end_handle(self, handle: str, *, namespace: str) -> None:
        """Put the session ``handle`` names (see ``handle``) on the deny list, for as long as
        any session can live. A malformed handle is ignored."""
        revocation = self._deny_list()
        if not is_handle(handle):
            return
        ttl = lifetime(self._absolute_timeout)
        await keep_latest(revocation, handle, session_module.now() + ttl, ttl)

    async def end_user(
        self, user: str, *, namespace: str, last_seen: Any = None, keep: str | None = None
    ) -> int:
        """Refuse, in every process sharing the deny list, every token bound to ``user``
        whose session was created (or bound to the user) before now, this request's own
        included: ``keep`` cannot be honoured here, so the session layer re-issues the
        session it keeps as a new one. Returns 0: tokens held by clients cannot be counted.
        """
        revocation = self._deny_list()
        t = session_module.now()
        await keep_latest(
            revocation, cutoff_key(namespace, user), t, lifetime(self._absolute_timeout)
        )
        return 0

    def _deny_list(self) -> ServerStore:
        if self.revocation is None:
            raise StoreError(
                f"{type(self).__name__} cannot end sessions without a deny list: give it "
                "revocation=<a server-side store>"
            )
        return self.revocation
