"""Input checks run before any kernel: clear ``TypeError``/``ValueError`` naming the argument."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_x(x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D [B, C, H, W], got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.shape[1] == 0 or x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"x must have C >= 1 and H*W >= 1, got shape {tuple(x.shape)}")
    return x


def check_weight(name: str, w: object, shape: Optional[Sequence[Optional[int]]], x: Tensor) -> Tensor:
    """``w`` must be a float tensor on ``x``'s device with ``shape`` (None entries: any size;
    ``shape=None``: any shape, the caller checks it)."""
    if not isinstance(w, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if w.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor, got {w.dtype}")
    if w.device != x.device:
        raise ValueError(f"{name} is on {w.device} but x is on {x.device}; put them on one device")
    if shape is not None and (w.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, w.shape))):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want} for x of shape {tuple(x.shape)}, got {tuple(w.shape)}")
    return w


def check_odd_kernel(name: str, k: int) -> None:
    if k % 2 != 1:
        raise ValueError(f"{name} must have an odd kernel size (same-size 'same' padding), got {k}")


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value  # type: ignore[return-value]
