"""Functional API: validated entry points that route to the fused op or to the eager reference.

Each function checks its inputs (``TypeError``/``ValueError`` naming the argument) before any
kernel runs, then runs :func:`attnfused.ops.attention` with the current backend's kernels, or
:mod:`attnfused.reference` when the backend is ``"reference"`` (or ``"auto"`` on a device with no
fused provider). Weight conventions are those of :mod:`attnfused.reference`.

Inputs: ``x`` ``[B, C, H, W]`` in fp16/bf16/fp32/fp64, NCHW or channels_last (other strides get
one copy); the output has ``x``'s dtype and layout. Weights may have another float dtype than
``x`` (e.g. fp32 weights with bf16 activations under autocast): the gates run in fp32 (fp64 for
fp64 inputs) and weight gradients come back in the weights' dtype.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from . import reference
from ._backend import use_reference
from ._validate import check_choice, check_odd_kernel, check_weight, check_x
from .ops import attention

__all__ = ["channel_gate", "se", "eca", "channel_attention", "spatial_attention", "cbam"]

GATES = ("fc", "conv")
POOLS = ("avg", "max", "avgmax")


def _check_channel_weights(x: Tensor, w1: Tensor, w2: Optional[Tensor], gate: str) -> None:
    c = x.shape[1]
    check_choice("gate", gate, GATES)
    if gate == "fc":
        check_weight("w1", w1, (None, c), x)
        check_weight("w2", w2, (c, w1.shape[0]), x)
    else:
        check_weight("w1", w1, (1, 1, None), x)
        check_odd_kernel("w1", w1.shape[-1])
        if w2 is not None:
            raise ValueError("w2 must be None for the 'conv' gate (it has a single 1-D kernel)")


def _check_spatial_weight(x: Tensor, sw: Tensor) -> None:
    check_weight("spatial_weight", sw, (1, 2, None, None), x)
    if sw.shape[2] != sw.shape[3]:
        raise ValueError(f"spatial_weight must be square [1, 2, k, k], got {tuple(sw.shape)}")
    check_odd_kernel("spatial_weight", sw.shape[-1])


def channel_gate(
    x: Tensor, w1: Tensor, w2: Optional[Tensor] = None, gate: str = "fc", pool: str = "avg"
) -> Tensor:
    """``x * sigmoid(G(pool(x)))``: SE (``gate="fc"``), ECA (``gate="conv"``), CBAM's channel stage
    (``pool="avgmax"``: the gate on avg and max stats, summed before the sigmoid)."""
    check_x(x)
    _check_channel_weights(x, w1, w2, gate)
    check_choice("pool", pool, POOLS)
    if use_reference(x):
        return reference.channel_gate(x, w1, w2, gate, pool)
    return attention(x, w1, w2, gate, pool, None)


def se(x: Tensor, w1: Tensor, w2: Tensor, pool: str = "avg") -> Tensor:
    """Squeeze-and-excitation: ``w1`` ``[C//r, C]``, ``w2`` ``[C, C//r]``, ``pool`` "avg" or "max"."""
    check_choice("pool", pool, ("avg", "max"))
    return channel_gate(x, w1, w2, "fc", pool)


def eca(x: Tensor, weight: Tensor) -> Tensor:
    """Efficient channel attention: ``weight`` ``[1, 1, k]``, k odd, on the average-pooled input."""
    return channel_gate(x, weight, None, "conv", "avg")


def channel_attention(x: Tensor, w1: Tensor, w2: Optional[Tensor] = None, gate: str = "fc") -> Tensor:
    """CBAM channel attention (avg and max pooling through one shared gate)."""
    return channel_gate(x, w1, w2, gate, "avgmax")


def spatial_attention(x: Tensor, weight: Tensor) -> Tensor:
    """CBAM spatial attention: ``weight`` ``[1, 2, k, k]`` over the maps ``[max_C x, mean_C x]``."""
    check_x(x)
    _check_spatial_weight(x, weight)
    if use_reference(x):
        return reference.spatial_attention(x, weight)
    return attention(x, None, None, "fc", "avg", weight)


def cbam(x: Tensor, w1: Tensor, w2: Optional[Tensor], gate: str, spatial_weight: Tensor) -> Tensor:
    """CBAM: channel attention (``gate`` "fc" or "conv") then spatial attention, as one fused block."""
    check_x(x)
    _check_channel_weights(x, w1, w2, gate)
    _check_spatial_weight(x, spatial_weight)
    if use_reference(x):
        return reference.cbam(x, w1, w2, gate, spatial_weight)
    return attention(x, w1, w2, gate, "avgmax", spatial_weight)
