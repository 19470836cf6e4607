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

from .spec import ChannelSpec, SpatialSpec

__all__ = [
    "channel_gate",
    "se",
    "eca",
    "channel_attention",
    "spatial_attention",
    "cbam",
    "attention",
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


# -- the gate family (attnfused.spec) -----------------------------------------------------------


def _gate_fn(z: Tensor, name: str) -> Tensor:
    return torch.sigmoid(z) if name == "sigmoid" else F.hardsigmoid(z)


def _family_logits(s: Tensor, spec: ChannelSpec, w1, b1, w2, b2) -> Tensor:
    if spec.gate == "fc":
        h = F.linear(s, w1.reshape(w1.shape[0], -1), b1)
        h = F.relu(h) if spec.act == "relu" else F.silu(h)
        return F.linear(h, w2.reshape(w2.shape[0], -1), b2)
    if spec.gate == "linear":
        return F.linear(s, w1.reshape(w1.shape[0], -1), b1)
    k = w1.shape[-1]
    s1 = s.unsqueeze(1)
    if spec.conv_padding == "circular":
        return F.conv1d(F.pad(s1, ((k - 1) // 2, (k - 1) // 2), mode="circular"), w1.view(1, 1, k)).squeeze(1)
    return F.conv1d(s1, w1.view(1, 1, k), padding=(k - 1) // 2).squeeze(1)


def attention(
    x: Tensor,
    channel: Optional[ChannelSpec] = None, w1: Optional[Tensor] = None, b1: Optional[Tensor] = None,
    w2: Optional[Tensor] = None, b2: Optional[Tensor] = None,
    spatial: Optional[SpatialSpec] = None, sw: Optional[Tensor] = None, sb: Optional[Tensor] = None,
    bn_weight: Optional[Tensor] = None, bn_bias: Optional[Tensor] = None,
    bn_mean: Optional[Tensor] = None, bn_var: Optional[Tensor] = None,
    bn_eps: float = 1e-5, bn_train: bool = False, bn_momentum: float = 0.1,
) -> Tensor:
    """Any member of the gate family, eagerly: ``x1 = x * ca``, then ``y = x1 * sa(x1)``.

    Max pooling sends gradients to the first maximal element (``adaptive_max_pool2d``,
    ``torch.max``), the family's rule. In training a spatial BatchNorm uses batch statistics and
    updates ``bn_mean`` / ``bn_var`` in place, as ``F.batch_norm`` does.

    Weights of another float dtype than ``x`` (fp32 weights, bf16 ``x`` without autocast, which
    eager refuses and the fused op takes): each gate runs in its first weight's dtype, on the pooled
    statistics cast to it, and the gate is cast to ``x``'s dtype for the rescale. With one dtype
    throughout, every cast is a no-op.
    """
    b, c = x.shape[:2]
    if channel is not None:
        avg = F.adaptive_avg_pool2d(x, 1).view(b, c) if channel.pool != "max" else None
        mx = F.adaptive_max_pool2d(x, 1).view(b, c) if channel.pool != "avg" else None
        if channel.pool == "avgmax_mean":
            stats = [0.5 * (avg + mx)]
        else:
            stats = {"avg": [avg], "max": [mx], "avgmax": [avg, mx]}[channel.pool]
        wd = w1.dtype
        w2, b1, b2 = (_to(t, wd) for t in (w2, b1, b2))
        z = sum(_family_logits(s.to(wd), channel, w1, b1, w2, b2) for s in stats)
        x = x * _gate_fn(z, channel.gate_fn).to(x.dtype).view(b, c, 1, 1)
    if spatial is not None:
        m, mean = x.max(dim=1, keepdim=True)[0], x.mean(dim=1, keepdim=True)
        maps = {"max_mean": lambda: torch.cat((m, mean), 1), "mean_max": lambda: torch.cat((mean, m), 1),
                "half_sum": lambda: 0.5 * (mean + m)}[spatial.maps]()
        z = F.conv2d(maps.to(sw.dtype), sw, _to(sb, sw.dtype), padding=(sw.shape[-1] - 1) // 2)
        if spatial.norm:
            z = F.batch_norm(z, bn_mean, bn_var, bn_weight, bn_bias, bn_train or bn_mean is None, bn_momentum, bn_eps)
        x = x * _gate_fn(z, spatial.gate_fn).to(x.dtype)
    return x


def _to(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    return t if t is None or t.dtype == dtype else t.to(dtype)
