"""Each speed trick of aiohttp_sessionkit._speed against the readable code it replaces."""

from __future__ import annotations

import enum
import json
from typing import Any

import pytest

from aiohttp_sessionkit import JSONSerializer
from aiohttp_sessionkit._speed import new_json_encoder

READABLE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class Level(enum.IntEnum):
    ADMIN = 3


class Colour(enum.StrEnum):
    RED = "red"


def _circular() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


ENCODABLE = [
    [{"user": 42, "name": "Zoë", "roles": ["admin", "dev"], "csrf": "x" * 40}, []],
    [{"cart": [{"sku": "a-1", "qty": 2, "price": 9.99}], "nested": {"deep": {"er": None}}}],
    [{"big": 2**80, "neg": -1.5e-300, "t": True, "f": False, "n": None}],
    [{"quote": 'say "hi"\\\n\t\x00', "emoji": "\U0001f600", "lone": "\ud800"}],
    [{"level": Level.ADMIN, "colour": Colour.RED}, [("a", "tuple")]],
    {},
    [],
    "just a string",
    3.0,
]
REFUSED = [
    [{"a": {1, 2}}],  # a set
    [{"a": b"bytes"}],
    [{"a": float("nan")}],
    [{"a": float("inf")}],
    [{(1, 2): "tuple key"}],
    _circular(),
]


@pytest.mark.parametrize("value", ENCODABLE, ids=range(len(ENCODABLE)))
def test_the_kept_c_encoder_writes_what_json_encoder_writes(value: Any) -> None:
    encode = new_json_encoder()
    assert encode is not None  # CPython with its C accelerator, as the figures were taken
    assert "".join(encode(value, 0)) == READABLE.encode(value)


@pytest.mark.parametrize("value", REFUSED, ids=range(len(REFUSED)))
def test_the_kept_c_encoder_refuses_what_json_encoder_refuses(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as readable:
        READABLE.encode(value)
    encode = new_json_encoder()
    with pytest.raises(type(readable.value)) as kept:
        "".join(encode(value, 0))
    assert str(kept.value) == str(readable.value)


@pytest.mark.parametrize("value", REFUSED, ids=range(len(REFUSED)))
def test_the_serializer_encodes_correctly_after_a_refusal(value: Any) -> None:
    serializer = JSONSerializer()
    with pytest.raises((TypeError, ValueError)):
        serializer.dumps([{"ok": [1, 2]}, [value]])
    for good in ENCODABLE[:3]:
        assert serializer.dumps(good) == READABLE.encode(good).encode("utf-8", "surrogatepass")
