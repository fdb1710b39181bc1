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


class JSONSerializer:
    """Compact, strict JSON (no NaN or Infinity), UTF-8 encoded."""

    __slots__ = ("_decoder", "_encoder")

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self._decoder = json.JSONDecoder(parse_constant=_reject_constant)

    def dumps(self, value: Any) -> bytes:
        return self._encoder.encode(value).encode()

    def loads(self, data: bytes) -> Any:
        return self._decoder.decode(data.decode())
