"""Serializers turn session data into bytes and back. JSON by default; never pickle."""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

__all__ = ["JSONSerializer", "Serializer"]


@runtime_checkable
class Serializer(Protocol):
    """Turns a JSON-like value into bytes and back.

    ``loads`` may raise ``ValueError``, ``TypeError`` or ``RecursionError`` on bad input;
    the session layer turns those into "no session". ``dumps`` raises ``TypeError`` or
    ``ValueError`` for values it cannot represent.
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


class JSONSerializer:
    """Compact, strict JSON (no NaN, Infinity or overflowing numbers), UTF-8 encoded."""

    __slots__ = ("_decoder", "_encoder")

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self._decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)

    # "surrogatepass" both ways: a str holding a lone surrogate (which JSON's \uXXXX escapes
    # can produce) survives a round trip instead of failing the next save.
    def dumps(self, value: Any) -> bytes:
        return self._encoder.encode(value).encode("utf-8", "surrogatepass")

    def loads(self, data: bytes) -> Any:
        return self._decoder.decode(data.decode("utf-8", "surrogatepass"))
