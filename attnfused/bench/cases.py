"""What the benchmarks run: blocks, shapes, and the byte count that defines "memory speed"."""

from __future__ import annotations

from typing import Callable

from torch import nn

import attnfused

# The attention blocks as used in SE/ECA/CBAM-ResNet (ratio 16, ECA gamma 2 b 1, CBAM 7x7).
BLOCKS: dict[str, Callable[[int], nn.Module]] = {
    "se_avg": lambda c: attnfused.SEBlock("avg", c, 16),
    "se_max": lambda c: attnfused.SEBlock("max", c, 16),
    "eca": lambda c: attnfused.ECABlock(c),
    "cbam_fc": lambda c: attnfused.CBAMBlock("FC", 7, channels=c, ratio=16),
    "cbam_conv": lambda c: attnfused.CBAMBlock("Conv", 7, channels=c, gamma=2, b=1),
}

# ResNet-50 stage outputs (C, H, W) where the blocks sit.
RESNET50_STAGES = [(256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]


def minimal_bytes(numel: int, elem_size: int, mode: str) -> int:
    """DESIGN.md §5 minimum: forward reads x and writes y once (2 N); backward reads dy and x and
    writes dx once (3 N). "fwdbwd" is both (5 N)."""
    passes = {"fwd": 2, "fwdbwd": 5}[mode]
    return passes * numel * elem_size


def parse_shape(text: str) -> tuple[int, int, int]:
    """"C,H,W" or "C,HxW" -> (C, H, W), each at least 1."""
    parts = text.replace("x", ",").split(",")
    try:
        c, h, w = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"shape must be C,H,W (three integers), got {text!r}") from None
    if min(c, h, w) < 1:
        raise ValueError(f"shape must have C, H and W >= 1, got {text!r}")
    return c, h, w


def block_refusal(block: str, channels: int) -> str | None:
    """Why ``block`` cannot be built for ``channels`` (e.g. SE's ratio 16 leaves no hidden units
    below 16 channels), or None."""
    try:
        BLOCKS[block](channels)
    except ValueError as e:
        return str(e)
    return None
