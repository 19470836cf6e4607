"""Constructor-argument checks shared by the modules: ``ValueError`` naming argument and value."""

from __future__ import annotations

import math
import numbers
from typing import Sequence


def positive_int(name: str, value: object) -> int:
    """Any integer type (``int``, ``numpy.int64``, ...) >= 1, returned as ``int``; not bool/float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def one_of(name: str, value: object, choices: Sequence[object]) -> object:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def hidden_width(channels: int, ratio: int) -> int:
    """``channels // ratio`` as the source's FC gate uses it; zero width is refused."""
    positive_int("channels", channels)
    positive_int("ratio", ratio)
    if channels // ratio < 1:
        raise ValueError(f"ratio={ratio} leaves no hidden units for channels={channels} (channels // ratio == 0)")
    return channels // ratio


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's adaptive kernel size ``|(log2 C + b) / gamma|``, made odd by adding 1.

    Computed with ``math.log(channels, 2)`` exactly as the source does: the kernel size decides the
    checkpoint's weight shape, so it must agree with the source even where float rounding matters.
    """
    positive_int("channels", channels)
    for name, v in (("gamma", gamma), ("b", b)):
        # numbers.Real: also numpy's scalars, which the source's arithmetic takes as well
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if gamma == 0:
        raise ValueError("gamma must be non-zero, got 0")
    k = int(abs((math.log(channels, 2) + b) / gamma))
    return k if k % 2 else k + 1
