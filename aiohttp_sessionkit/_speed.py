"""The speed tricks the package keeps, in one place.

A trick stays only while it buys at least 3% of a benchmark route's instructions per
request (``benchmarks/instructions.py``; the figures are in docs/performance.md, "Tricks
kept and removed"). Each has a readable equivalent that ``tests/unit/test_speed_equivalence.py``
checks it against.
"""

from __future__ import annotations

import json
import json.encoder
from typing import Any

__all__ = ["new_json_encoder"]

# CPython's C encoder (private: json.encoder.c_make_encoder), built once and kept.
# JSONEncoder.encode builds a new one, with a few closures, on every call: 3% of a
# MemoryStore /write, which keeps that route above its target (docs/performance.md).
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def new_json_encoder() -> Any:
    """A C encoder that does what ``json.JSONEncoder(ensure_ascii=False, allow_nan=False,
    separators=(",", ":")).encode(value)`` does, as ``"".join(encoder(value, 0))``; None
    without the C accelerator (use that ``encode`` then).

    After it raised, build a new one: its circular-reference markers may be left half filled.
    """
    if _c_make_encoder is None:
        return None
    return _c_make_encoder(
        {}, _not_serializable, json.encoder.encode_basestring, None, ":", ",",
        False, False, False,
    )  # fmt: skip
