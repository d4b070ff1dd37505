"""Choosing among weighted alternatives (model versions) from a caller-supplied random number."""

import functools
import hashlib
import math
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def pick_weighted(choices: Sequence[tuple[T, float]], u: float) -> T:
    """Return the choice whose cumulative-weight interval holds `u * total`, for u in [0, 1)."""
    if not 0 <= u < 1:
        raise ValueError(f"u must be in [0, 1), got {u!r}")
    total = 0.0
    for _, weight in choices:
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weights must be finite and non-negative, got {weight!r}")
        total += weight
    if total <= 0:
        raise ValueError("at least one choice needs a positive weight")
    positive = [(choice, weight) for choice, weight in choices if weight > 0]
    target = u * total
    cumulative = 0.0
    for choice, weight in positive:
        cumulative += weight
        if target < cumulative:
            return choice
    # Rounding can leave u * total a hair above the running sum; the last real choice owns it.
    return positive[-1][0]


@functools.lru_cache(maxsize=65536)
def stable_unit(key: str) -> float:
    """Map a string to a float in [0, 1), the same on every machine and run (for sticky splits)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    # 53 bits fill a float's mantissa exactly; more could round the result up to 1.0.
    return (int.from_bytes(digest[:8], "big") >> 11) / (1 << 53)
