"""Eager PyTorch implementations of every block: the specification the kernels are tested against.

These functions follow the source text's modules operation for operation (pooling, gate, sigmoid,
rescale in the input's dtype), so that "reference" output equals what the original ``nn.Module``
code computes. They are also the ``"reference"`` backend: plain autograd, no custom ops.

Conventions shared with :mod:`attnfused.functional`:

- ``x`` is ``[B, C, H, W]``.
- An FC gate is ``w2 @ relu(w1 @ s)`` with ``w1: [C // r, C]`` and ``w2: [C, C // r]`` (no bias).
- A conv gate is a 1-D convolution over the channel axis with ``weight: [1, 1, k]``, zero padding
  ``(k - 1) // 2`` (ECA).
- ``pool`` is ``"avg"``, ``"max"`` or ``"avgmax"`` (the gate applied to both and summed before the
  sigmoid, as in CBAM's channel attention).
- The spatial gate stacks ``[max_C, mean_C]`` (in that order) and applies a ``[1, 2, k, k]`` conv.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "channel_gate",
    "se",
    "eca",
    "channel_attention",
    "spatial_attention",
    "cbam",
]


def _gate_logits(s: Tensor, w1: Tensor, w2: Optional[Tensor], gate: str) -> Tensor:
    """Gate pre-activation for pooled stats ``s: [B, C]``."""
    if gate == "fc":
        return F.linear(F.relu(F.linear(s, w1)), w2)
    if gate == "conv":
        k = w1.shape[-1]
        return F.conv1d(s.unsqueeze(1), w1.view(1, 1, k), padding=(k - 1) // 2).squeeze(1)
    raise ValueError(f"gate must be 'fc' or 'conv', got {gate!r}")


def channel_gate(
    x: Tensor, w1: Tensor, w2: Optional[Tensor] = None, gate: str = "fc", pool: str = "avg"
) -> Tensor:
    """``x * sigmoid(G(pool(x)))`` with ``G`` an FC or conv gate; see the module docstring."""
    b, c = x.shape[:2]
    if pool == "avg":
        z = _gate_logits(F.adaptive_avg_pool2d(x, 1).view(b, c), w1, w2, gate)
    elif pool == "max":
        z = _gate_logits(F.adaptive_max_pool2d(x, 1).view(b, c), w1, w2, gate)
    elif pool == "avgmax":
        z = _gate_logits(F.adaptive_avg_pool2d(x, 1).view(b, c), w1, w2, gate) + _gate_logits(
            F.adaptive_max_pool2d(x, 1).view(b, c), w1, w2, gate
        )
    else:
        raise ValueError(f"pool must be 'avg', 'max' or 'avgmax', got {pool!r}")
    return x * torch.sigmoid(z).view(b, c, 1, 1)


def se(x: Tensor, w1: Tensor, w2: Tensor, pool: str = "avg") -> Tensor:
    """Squeeze-and-excitation: FC gate on the average- (or max-) pooled input."""
    return channel_gate(x, w1, w2, "fc", pool)


def eca(x: Tensor, weight: Tensor) -> Tensor:
    """Efficient channel attention: 1-D conv gate on the average-pooled input."""
    return channel_gate(x, weight, None, "conv", "avg")


def channel_attention(x: Tensor, w1: Tensor, w2: Optional[Tensor] = None, gate: str = "fc") -> Tensor:
    """CBAM channel attention: the shared gate on avg- and max-pooled stats, summed."""
    return channel_gate(x, w1, w2, gate, "avgmax")


def spatial_attention(x: Tensor, weight: Tensor) -> Tensor:
    """CBAM spatial attention: ``x * sigmoid(conv([max_C x, mean_C x]))``."""
    k = weight.shape[-1]
    maps = torch.cat((x.max(dim=1, keepdim=True)[0], x.mean(dim=1, keepdim=True)), dim=1)
    return x * torch.sigmoid(F.conv2d(maps, weight, padding=(k - 1) // 2))


def cbam(
    x: Tensor, w1: Tensor, w2: Optional[Tensor], gate: str, spatial_weight: Tensor
) -> Tensor:
    """CBAM: channel attention (``gate`` "fc" or "conv", avg+max pooling), then spatial attention."""
    return spatial_attention(channel_attention(x, w1, w2, gate), spatial_weight)
