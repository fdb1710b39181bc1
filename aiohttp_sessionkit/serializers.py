"""Serializers turn session data into bytes and back. JSON by default; never pickle."""

from __future__ import annotations

import json
import json.encoder
import re
from itertools import accumulate, compress
from operator import not_
from typing import Any, Protocol, runtime_checkable

from .exceptions import SerializationError

__all__ = [
    "MAX_DEPTH",
    "JSONSerializer",
    "NonStringKeyError",
    "Serializer",
    "check_depth",
    "check_keys",
]

#: The deepest nesting of arrays and objects in any JSON the library decodes (session
#: records, sealed cookies, JWT headers and claims, legacy records) or writes. Python's own
#: limit is an accident of the interpreter: a RecursionError near 1,000 levels on 3.11, none
#: below about 8,000 on 3.12 and later; this one is the same everywhere.
MAX_DEPTH = 64

# What is not structure: a JSON string (an unterminated one runs to the end of the text,
# as it does for the parser, which then fails; matching it in one pass keeps the scan
# linear), or a run of characters that are neither brackets nor quotes.
_NOT_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[^\[\]{}"]+', re.DOTALL)
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def check_depth(text: str) -> str:
    """``text`` unchanged; ValueError if its arrays and objects nest deeper than MAX_DEPTH.

    Runs before the parser, so a deep document is refused without the parser's recursion.
    Too deep takes more than MAX_DEPTH opening brackets and as many closing ones: a shorter
    text, or one with fewer opening brackets, passes at once (most sessions: one len(), or
    two counts). Otherwise the strings are cut out and the depth is the running sum of the
    brackets left, in linear time.
    """
    if len(text) <= 2 * MAX_DEPTH or text.count("[") + text.count("{") <= MAX_DEPTH:
        return text
    skeleton = _NOT_STRUCTURE.sub("", text)
    if max(accumulate(map(_STEP.__getitem__, skeleton)), default=0) > MAX_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} arrays and objects")
    return text


@runtime_checkable
class Serializer(Protocol):
    """Turns a JSON-like value into bytes and back.

    ``loads`` may raise ``ValueError``, ``TypeError`` or ``RecursionError`` on bad input;
    the session layer turns those into "no session". ``dumps`` raises ``TypeError`` or
    ``ValueError`` for values it cannot represent. A serializer of your own should refuse
    deep nesting itself (:func:`~aiohttp_sessionkit.serializers.check_depth` does it for
    JSON text).
    """

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0:  # inf - inf is nan; 1e999 overflows to inf
        raise ValueError("a number too large for a float")
    return value


class NonStringKeyError(SerializationError):
    """A dict key that is not a ``str``: JSON would store it as a string, so the value
    would come back under another key (``1`` as ``"1"``), or overwrite the value of the
    string key it collides with. ``path`` leads to it (dict keys and list indexes, the
    offending key last); the message names it from ``root``."""

    def __init__(self, path: tuple[Any, ...], *, root: str = "value") -> None:
        self.path = path
        key = path[-1]
        shown = repr(key)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        where = root + "".join(f"[{step!r}]" for step in path)
        super().__init__(
            f"{where}: keys must be str, not {type(key).__name__} ({shown}); JSON would "
            "turn the key into a string and the value would come back under another key; "
            "nothing was saved"
        )


_CONTAINERS = (dict, list, tuple)
# Exactly these types hold no dict: a container whose items are all of them needs no look
# inside, which C-level map/all calls find without a Python loop over its items.
_IS_SCALAR = frozenset((str, int, float, bool, type(None))).__contains__


def check_keys(value: Any, *, root: str = "value", encoded: str | None = None) -> None:
    """Raise ``NonStringKeyError`` if any dict inside ``value`` has a key that is not
    a ``str``. ``value`` must be acyclic (check after the encoder, which refuses cycles);
    ``encoded``, its JSON text when the caller has it, lets the common case skip the walk.

    This runs on every save, and a walk over the data in Python costs several times the
    encoding (docs/performance.md), so it is the fallback: every dict puts at least one
    ``{`` in the JSON text, so a text with one ``{`` holds at most one dict, and when that
    is ``value`` itself or its first item (the session layer's ``[data, flashes]``), one
    ``str.join`` over its keys checks it in C.
    """
    if encoded is not None:
        braces = encoded.count("{")
        if braces <= 1:
            only = value[0] if type(value) is list and value else value
            if type(only) is dict:
                try:
                    "".join(only)
                except TypeError:
                    _locate(value, root)
                return
            if not braces:
                return
    todo = [value]
    for container in todo:  # grows while it is walked: no recursion, however deep
        if isinstance(container, dict):
            try:
                "".join(container)
            except TypeError:
                _locate(value, root)
            items: Any = container.values()
        elif isinstance(container, list | tuple):
            items = container
        else:  # a scalar of a subclass (an IntEnum member, say): encoded, holds no dict
            continue
        if not all(map(_IS_SCALAR, map(type, items))):
            todo += compress(items, map(not_, map(_IS_SCALAR, map(type, items))))


def _locate(value: Any, root: str) -> None:
    """Raise NonStringKeyError for the first non-str key in ``value``, with its path."""
    # Each entry: a container, and where it is as a linked list (parent, step) or None.
    stack: list[tuple[Any, Any]] = [(value, None)]
    while stack:
        container, where = stack.pop()
        if isinstance(container, dict):
            for key, item in container.items():
                if not isinstance(key, str):
                    raise NonStringKeyError(_unwind((where, key)), root=root) from None
                if isinstance(item, _CONTAINERS):
                    stack.append((item, (where, key)))
        else:
            for index, item in enumerate(container):
                if isinstance(item, _CONTAINERS):
                    stack.append((item, (where, index)))


def _unwind(where: Any) -> tuple[Any, ...]:
    steps = []
    while where is not None:
        where, step = where
        steps.append(step)
    return tuple(reversed(steps))


class JSONSerializer:
    """Compact, strict JSON (no NaN, Infinity or overflowing numbers, nothing nested deeper
    than :data:`~aiohttp_sessionkit.serializers.MAX_DEPTH`), UTF-8 encoded.

    Types map as JSON does, with one refusal: ``str``, ``int``, ``float``, ``bool``,
    ``None``, ``list`` and ``dict`` come back as they went in; a ``tuple`` (or other list
    or dict subclass) comes back as a plain ``list`` (``dict``), a ``str`` subclass such as
    a ``StrEnum`` member as a plain ``str``. A dict key that is not a ``str``, at any depth,
    raises ``NonStringKeyError`` naming where it is: JSON would silently turn it into
    a string. Anything else (sets, bytes, dates, objects) raises ``TypeError``.
    """

    __slots__ = ("_decoder", "_encoder")

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self._decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)

    # "surrogatepass" both ways: a str holding a lone surrogate (which JSON's \uXXXX escapes
    # can produce) survives a round trip instead of failing the next save.
    def dumps(self, value: Any) -> bytes:
        text = self._encoder.encode(value)
        check_keys(value, encoded=text)
        # Never write what the next load would refuse.
        return check_depth(text).encode("utf-8", "surrogatepass")

    def loads(self, data: bytes) -> Any:
        text = check_depth(data.decode("utf-8", "surrogatepass"))
        # raw_decode, not decode: no whitespace before the document (a JSONDecodeError,
        # which is a ValueError, when there is no document).
        value, end = self._decoder.raw_decode(text)
        if end != len(text) and not text[end:].isspace():
            raise ValueError("extra data after the JSON document")
        return value
