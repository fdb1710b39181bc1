"""Serializers turn session data into bytes and back. JSON by default; never pickle."""

from __future__ import annotations

import json
import json.encoder
import re
from itertools import accumulate
from typing import Any, Protocol, runtime_checkable

__all__ = ["MAX_DEPTH", "JSONSerializer", "Serializer", "check_depth"]

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


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The C encoder, called directly and kept: JSONEncoder.encode rebuilds it (and a few
# closures) on every call, which is a third of the cost of encoding a small session. None
# without the C accelerator; the public API is used then.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)


def _new_c_encoder() -> Any:
    if _c_make_encoder is None:
        return None
    return _c_make_encoder(
        {}, _not_serializable, json.encoder.encode_basestring, None, ":", ",",
        False, False, False,
    )  # fmt: skip


class JSONSerializer:
    """Compact, strict JSON (no NaN, Infinity or overflowing numbers, nothing nested deeper
    than :data:`~aiohttp_sessionkit.serializers.MAX_DEPTH`), UTF-8 encoded."""

    __slots__ = ("_c_encode", "_decoder", "_encoder", "_scan")

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self._c_encode: Any = _new_c_encoder()
        self._decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
        # The scanner behind JSONDecoder.decode, without its Python-level wrapping.
        self._scan: Any = self._decoder.scan_once  # type: ignore[attr-defined]

    # "surrogatepass" both ways: a str holding a lone surrogate (which JSON's \uXXXX escapes
    # can produce) survives a round trip instead of failing the next save.
    def dumps(self, value: Any) -> bytes:
        encode = self._c_encode
        text: str
        if encode is None:
            text = self._encoder.encode(value)
        else:
            try:
                text = "".join(encode(value, 0))
            except BaseException:
                # The encoder's circular-reference markers may be left half filled: start
                # the next call with a fresh one.
                self._c_encode = _new_c_encoder()
                raise
        # Never write what the next load would refuse.
        return check_depth(text).encode("utf-8", "surrogatepass")

    def loads(self, data: bytes) -> Any:
        text = check_depth(data.decode("utf-8", "surrogatepass"))
        try:
            value, end = self._scan(text, 0)
        except StopIteration:
            raise ValueError("not a JSON document") from None
        if end != len(text) and not text[end:].isspace():
            raise ValueError("extra data after the JSON document")
        return value
