"""The Session mapping and the payload format every store carries."""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Iterator, MutableMapping
from typing import Any, TypeVar

from .exceptions import SerializationError
from .serializers import NonStringKeyError, Serializer

__all__ = ["Session"]

# Payload: a version byte, then created, last access (unsigned 32-bit epoch seconds) and the
# per-session max_age (signed; -1 for "use the configured default"), then the serialized
# body [data] or [data, flashes]. Binary, so a ~100-byte session still seals into a small
# cookie. Version 2 adds 8 bytes after max_age: the session's lineage id, which only
# client-side stores carry (a logout remembers it; see middleware.ENDED).
_PAYLOAD_VERSION = 1
_HEADER = struct.Struct(">BIIi")
_LINEAGE_VERSION = 2
_LINEAGE_HEADER = struct.Struct(">BIIi8s")
_MAX_AGE_LIMIT = 2**31 - 1


#: Seconds a session's creation or last-access time may lie in the future (written by a
#: host whose clock runs ahead) and still open: ``setup(..., clock_skew_tolerance=...)``.
DEFAULT_CLOCK_SKEW_TOLERANCE = 60

log = logging.getLogger("aiohttp_sessionkit")
_skew_reported = False


def now() -> int:
    """Current time in whole epoch seconds (a seam for tests with a fake clock)."""
    return int(time.time())


def report_skew(ahead: int, tolerance: int) -> None:
    """Log, once per process, that a session ``ahead`` seconds in the future was refused.

    Such a session was written by a host whose clock runs ahead of this one's by more than
    ``tolerance`` (or forged, for a client-side token): its timeouts cannot be checked. The
    message says nothing that identifies the session.
    """
    global _skew_reported
    if _skew_reported:
        return
    _skew_reported = True
    log.warning(
        "a session written %d s in the future by this host's clock was refused (a fresh "
        "session was started): an application host's clock runs ahead of this one's by more "
        "than clock_skew_tolerance=%d s; synchronize the hosts' clocks (NTP), or raise "
        "setup(..., clock_skew_tolerance=...). Logged once per process.",
        ahead,
        tolerance,
    )


class Session(MutableMapping[str, Any]):
    """A dict-like session. Changes are tracked and saved once, when the response goes out."""

    __slots__ = (
        "_accessed",
        "_created",
        "_data",
        "_dirty",
        "_discard_old",
        "_established",
        "_flashes",
        "_identity",
        "_lineage",
        "_max_age",
        "_new",
        "_shown",
    )

    def __init__(
        self,
        identity: str | None = None,
        *,
        data: dict[str, Any] | None = None,
        new: bool = True,
        created: int | None = None,
        accessed: int | None = None,
        max_age: int | None = None,
        flashes: list[Any] | None = None,
    ) -> None:
        self._identity = identity
        self._data: dict[str, Any] = {} if data is None else data
        self._new = new
        self._created = now() if created is None else created  # a loaded session has one
        self._accessed = self._created if accessed is None else accessed
        self._max_age = max_age
        self._flashes: list[Any] = [] if flashes is None else flashes
        self._dirty = False
        self._discard_old = False
        # Went through new_session() or regenerate() in this request (a login): its new
        # record is one that a store with bounded room never evicts for an anonymous one.
        self._established = False
        # The id a client-side session keeps across its re-issues (hex), or None: a logout
        # remembers it so that a slower request of the same session cannot re-issue it.
        self._lineage: str | None = None
        # pop_flashes() handed out the flashes it loaded: a merge with a concurrent save
        # (merge_changes) must not bring them back.
        self._shown = False

    # -- what callers read ---------------------------------------------------------------
    @property
    def new(self) -> bool:
        """True when this session was not loaded from the store in this request."""
        return self._new

    @property
    def identity(self) -> str | None:
        """The session id (server-side stores), or None: new and unsaved, or a cookie store."""
        return self._identity

    @property
    def created(self) -> int:
        """When the session was first created, in epoch seconds. Writes do not change it."""
        return self._created

    @property
    def last_access(self) -> int:
        """When the session was last saved or refreshed, in epoch seconds."""
        return self._accessed

    @property
    def max_age(self) -> int | None:
        """This session's lifetime in seconds (cookie Max-Age and idle timeout); None: default."""
        return self._max_age

    @max_age.setter
    def max_age(self, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_AGE_LIMIT
        ):
            raise ValueError(
                f"max_age must be a positive number of seconds up to {_MAX_AGE_LIMIT} (about 68 "
                f"years) or None, not {value!r}"
            )
        if value != self._max_age:
            self._max_age = value
            self._dirty = True

    @property
    def empty(self) -> bool:
        """True when the session holds no data and no flash messages."""
        return not self._data and not self._flashes

    @property
    def is_dirty(self) -> bool:
        """True when the session will be written when the response goes out."""
        return self._dirty

    # -- actions ---------------------------------------------------------------------------
    def changed(self) -> None:
        """Mark the session as changed, after mutating a nested value in place."""
        self._dirty = True

    def invalidate(self) -> None:
        """Log out: delete the stored record, empty the session and expire the cookie.

        Writing to the session afterwards in the same request starts a brand-new session
        under a new id (for example a "you have been logged out" flash message).
        """
        self._data = {}
        self._flashes = []
        self._discard_old = True
        self._established = False
        self._dirty = True
        self._new = True
        self._identity = None
        self._lineage = None
        self._created = self._accessed = now()
        self._max_age = None

    def regenerate(self) -> None:
        """Keep the data but move it to a new id and delete the old record (use at login)."""
        self._discard_old = True
        self._established = True
        self._dirty = True
        self._identity = None
        self._lineage = None

    def flash(self, value: Any) -> None:
        """Queue a message for a later request; read it with :meth:`pop_flashes`."""
        self._flashes.append(value)
        self._dirty = True

    def pop_flashes(self) -> list[Any]:
        """Return the queued flash messages and clear them."""
        flashes = self._flashes
        if flashes:
            self._flashes = []
            self._dirty = True
            self._shown = True
        return flashes

    # -- MutableMapping ----------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"session keys must be str, not {type(key).__name__}")
        self._data[key] = value
        self._dirty = True

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._dirty = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def clear(self) -> None:
        if self._data:
            self._data.clear()
            self._dirty = True

    def __repr__(self) -> str:
        ident = "None" if self._identity is None else f"{self._identity[:6]}…"
        return (
            f"<Session new={self._new} identity={ident} keys={sorted(self._data)!r} "
            f"dirty={self._dirty}>"
        )


def encode_payload(session: Session, serializer: Serializer, accessed: int) -> bytes:
    """Serialize ``session`` for a store; raises SerializationError naming a bad key."""
    data = session._data
    body: list[Any] = [data, session._flashes] if session._flashes else [data]
    try:
        encoded = serializer.dumps(body)
    except (TypeError, ValueError) as exc:
        raise _serialization_error(data, session._flashes, serializer, exc) from exc
    max_age = -1 if session._max_age is None else session._max_age
    lineage = session._lineage
    if lineage is None:
        return _HEADER.pack(_PAYLOAD_VERSION, session._created, accessed, max_age) + encoded
    return (
        _LINEAGE_HEADER.pack(
            _LINEAGE_VERSION, session._created, accessed, max_age, bytes.fromhex(lineage)
        )
        + encoded
    )


def merge_changes(
    mine: Session, base: Session | None, current: Session, serializer: Serializer
) -> None:
    """Apply to ``current`` (a save another request made meanwhile) what this request
    changed: the difference between ``base`` (the session as this request loaded it, decoded
    again: fresh objects; ``None`` when it no longer opens) and ``mine`` (the session now).

    Values are compared in their serialized form, so that a nested value changed in place
    counts, and ``1`` and ``True`` differ. Keys set or changed here take this request's
    value; keys deleted here go; every other key keeps ``current``'s value. Flash messages
    added here are appended to ``current``'s; those ``base`` held are removed from
    ``current`` (first occurrences) if this request showed them. ``max_age`` is this
    request's if it changed it. ``created`` stays ``current``'s.
    """
    dumps = serializer.dumps
    before: dict[str, Any] = {} if base is None else base._data
    target = current._data
    for key, value in mine._data.items():
        if key not in before or dumps(value) != dumps(before[key]):
            target[key] = value
    for key in before:
        if key not in mine._data:
            target.pop(key, None)
    loaded: list[Any] = [] if base is None else base._flashes
    if mine._shown:
        flashes = list(current._flashes)
        for shown in map(dumps, loaded):
            for index, flash in enumerate(flashes):
                if dumps(flash) == shown:
                    del flashes[index]
                    break
        current._flashes = flashes + mine._flashes  # all added after the last pop_flashes()
    else:
        current._flashes = current._flashes + mine._flashes[len(loaded) :]
    if base is None or mine._max_age != base._max_age:
        current._max_age = mine._max_age


def new_lineage() -> str:
    """A fresh lineage id for a client-side session: 64 random bits, as hex."""
    return os.urandom(8).hex()


def _serialization_error(
    data: dict[str, Any], flashes: list[Any], serializer: Serializer, exc: Exception
) -> SerializationError:
    if isinstance(exc, NonStringKeyError) and len(exc.path) > 1:
        # The path runs from the body [data, flashes]: name it from the session instead.
        first, *rest = exc.path
        return NonStringKeyError(tuple(rest), root="session" if first == 0 else "flashes")
    for key, value in data.items():
        try:
            serializer.dumps(value)
        except (TypeError, ValueError) as item_exc:
            return SerializationError(
                f"session[{key!r}] holds a {type(value).__name__} that cannot be serialized "
                f"({item_exc}); store plain JSON values (str, int, float, bool, None, list, "
                "dict) instead; nothing was saved"
            )
    return SerializationError(
        f"a flash message cannot be serialized ({exc}); nothing was saved"
        if flashes
        else f"the session cannot be serialized ({exc}); nothing was saved"
    )


# The keywords of AbstractStore.restore, repeated on purpose: the default restore is this
# function, and the session layer calls it directly for stores that keep that default.
def decode_payload(
    payload: bytes,
    serializer: Serializer,
    *,
    identity: str | None,
    idle_timeout: int,
    absolute_timeout: int,
    clock_skew_tolerance: int = DEFAULT_CLOCK_SKEW_TOLERANCE,
) -> Session | None:
    """Rebuild a session from ``payload``; None when malformed, expired or from the future
    (by more than ``clock_skew_tolerance`` seconds)."""
    if len(payload) < _HEADER.size:
        return None
    version, created, accessed, stored_max_age = _HEADER.unpack_from(payload)
    start, lineage = _HEADER.size, None
    if version == _LINEAGE_VERSION and len(payload) >= _LINEAGE_HEADER.size:
        start = _LINEAGE_HEADER.size
        lineage = payload[_HEADER.size : start].hex()
    elif version != _PAYLOAD_VERSION:
        return None
    if stored_max_age < -1 or stored_max_age == 0:
        return None
    max_age = None if stored_max_age < 0 else stored_max_age  # -1: the configured default
    if not within_timeouts(
        created,
        accessed,
        max_age,
        now(),
        idle_timeout,
        absolute_timeout,
        clock_skew_tolerance,
    ):
        return None
    try:
        body = serializer.loads(payload[start:])
    except (ValueError, TypeError, RecursionError):
        return None
    if not isinstance(body, list) or not 1 <= len(body) <= 2 or not isinstance(body[0], dict):
        return None
    flashes = body[1] if len(body) == 2 else []
    if not isinstance(flashes, list):
        return None
    return loaded_session(
        Session, identity, body[0], flashes, created, accessed, max_age, lineage=lineage
    )


def within_timeouts(
    created: int,
    accessed: int,
    max_age: int | None,
    t: int,
    idle_timeout: int,
    absolute_timeout: int,
    clock_skew_tolerance: int,
) -> bool:
    """Whether a stored session may still open at time ``t``: the clock checks every store's
    restore shares (decode_payload, JWTStore). A session from the future by more than
    ``clock_skew_tolerance`` seconds is refused and reported (see :func:`report_skew`)."""
    if accessed < created:
        return False
    if accessed > t + clock_skew_tolerance:  # created <= accessed: the later of the two
        report_skew(accessed - t, clock_skew_tolerance)
        return False
    idle = idle_timeout if max_age is None else max_age
    return t - accessed <= idle and t - created <= absolute_timeout


_SessionT = TypeVar("_SessionT", bound=Session)


def loaded_session(
    session_class: type[_SessionT],
    identity: str | None,
    data: dict[str, Any],
    flashes: list[Any],
    created: int,
    accessed: int,
    max_age: int | None,
    *,
    lineage: str | None = None,
) -> _SessionT:
    """A session as a store loaded it: not new, unchanged. Every store's restore builds its
    session here."""
    session = session_class(
        identity,
        data=data,
        new=False,
        created=created,
        accessed=accessed,
        max_age=max_age,
        flashes=flashes,
    )
    session._lineage = lineage
    return session
