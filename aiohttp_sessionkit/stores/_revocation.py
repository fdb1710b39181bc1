"""What a client-side store's deny list holds: ended sessions, and per-user cutoff times.

``EncryptedCookieStore(revocation=...)`` and ``JWTStore(revocation=...)`` keep both in any
server store, as small ASCII records:

* a session (its lineage id, which every re-issue of its token keeps) ended by a logout,
  a login or ``end_session``: the entry holds when it may be forgotten (epoch seconds), the
  last moment a token of that session could still open;
* a user whose sessions were all ended (``end_user_sessions``, OWASP ASVS 5.0 7.4.1): the
  entry holds the cutoff (epoch microseconds) and the handle of a session to spare, if any.
  A token bound to that user whose session was born at or before the cutoff is refused.
  The entry lives as long as the absolute timeout, past which no such token opens.

A session is *born* for a user when it was bound to that user under its lineage id, in
microseconds: its token carries that time (``binding_time`` at its first save with the user
set; kept by every re-issue of the same lineage and user), so a login right after the cutoff
is not refused, and a slower request re-issuing an old token cannot make it young again.

Entries are only ever raised, never lowered, so two processes ending the same session or
user at once keep the later end.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, NoReturn

from .. import session as session_module
from ..abc import ServerStore
from ..exceptions import ConfigurationError, StoreError
from ..ids import record_key

__all__ = [
    "DenyListUsers",
    "binding_time",
    "born",
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
# Epoch microseconds have 16 digits until the year 2286.
_MAX_DIGITS = 19
_MICROS = 1_000_000


def binding_time() -> int:
    """Now, in epoch microseconds: when a session becomes a user's, or a user's cutoff. Finer
    than the session layer's whole seconds, so that a login in the same second as the
    cutoff, but after it, is not refused."""
    return time.time_ns() // 1000


def born(created: int, since: int | None) -> int:
    """When a session became its user's (epoch microseconds): when its token says it was
    bound (``since``), or its creation (seconds), whichever is later."""
    return max(created * _MICROS, since or 0)


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
    """The number an entry starts with (a deny entry's end, a cutoff); 0 for no entry, or
    anything we did not write."""
    if entry is None:
        return 0
    number = entry.split(b" ", 1)[0]
    return int(number) if number.isdigit() and len(number) <= _MAX_DIGITS else 0


async def refused(
    revocation: ServerStore, handle: str, user_cutoff_key: str | None, born: int
) -> bool:
    """True when a token may not open: its session (whose deny-list key is ``handle``) is on
    the deny list, or it is bound to a user (``user_cutoff_key`` given) whose cutoff came at
    or after ``born`` and does not spare this session.

    Both entries are read concurrently, through ``get`` so that they share a batching
    store's round trip with each other and with other requests' checks: a bound session
    costs no more waiting than an unbound one.
    """
    if user_cutoff_key is None:
        return await revocation.get(handle) is not None
    denied, cutoff = await asyncio.gather(
        revocation.get(handle), revocation.get(user_cutoff_key), return_exceptions=True
    )
    # return_exceptions: one failed read must not leave the other running unobserved.
    if isinstance(denied, BaseException):
        raise denied
    if isinstance(cutoff, BaseException):
        raise cutoff
    if denied is not None:
        return True
    if cutoff is None or born > stored_number(cutoff):
        return False
    spared = cutoff.split(b" ", 1)[1:]
    return spared != [handle.encode()]


async def keep_latest(
    revocation: ServerStore, key: str, value: int, ttl: int, note: str | None = None
) -> None:
    """Make the entry ``key`` hold at least ``value`` (with ``note`` after it, if given) and
    live ``ttl`` seconds.

    A create-only write; when an entry is there already, it is replaced only if it holds an
    earlier value (a later value always lives longer). Three rounds cover an entry that
    expires or is replaced between the calls.
    """
    entry = str(value) if note is None else f"{value} {note}"
    data, ttl = entry.encode("ascii"), max(ttl, 1)
    for _ in range(3):
        if await revocation.create(key, data, ttl):
            return
        current = await revocation.get(key)
        if current is not None:
            if stored_number(current) >= value:
                return
            if await revocation.update(key, data, ttl):
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
    _user_key: str | None

    @property
    def revocable(self) -> bool:
        """True when logout kills copies of the token too (a ``revocation`` store is set)."""
        return self.revocation is not None

    def set_user_key(self, user_key: str) -> None:
        """Bind tokens to ``session[user_key]``, so that a per-user cutoff finds them (only
        with a deny list; ``setup`` refuses ``user_key`` without one)."""
        name = type(self).__name__
        if self.revocation is None:
            raise ConfigurationError(
                f"user_key={user_key!r}: {name} cannot end a user's sessions without a deny "
                f"list; give {name}(..., revocation=<a server-side store>), or use a "
                "server-side store"
            )
        if self._user_key is not None and self._user_key != user_key:
            raise ConfigurationError(
                f"user_key={user_key!r}: this {name} already binds sessions by "
                f"user_key={self._user_key!r}; give each user_key its own store"
            )
        self._user_key = user_key

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
        whose session became the user's before now, except the session whose handle is
        ``keep``. Returns 0: tokens held by clients cannot be counted.

        A later call replaces the cutoff, and what it spares, with its own."""
        revocation = self._deny_list()
        note = keep if is_handle(keep) else None
        ttl = lifetime(self._absolute_timeout)
        await keep_latest(revocation, cutoff_key(namespace, user), binding_time(), ttl, note)
        return 0

    def _deny_list(self) -> ServerStore:
        if self.revocation is None:
            raise StoreError(
                f"{type(self).__name__} cannot end sessions without a deny list: give it "
                "revocation=<a server-side store>"
            )
        return self.revocation
