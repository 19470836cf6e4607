"""The gates: small math on ``[B, C]`` and ``[B, 2, H, W]`` tensors, forward and explicit backward.

Written once here for every kernel provider. Everything runs in the accumulation dtype ``acc``
(fp32, fp64 for fp64 inputs): weights are cast to it, weight gradients cast back by the caller.
The backward formulas are explicit (no nested autograd) so they trace cleanly under
``torch.compile`` and match eager's conventions: ``relu'(0) = 0``, ``sigmoid' = g * (1 - g)``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def _conv1d_pad(w: Tensor) -> int:
    return (w.shape[-1] - 1) // 2


def _logits(s: Tensor, w1: Tensor, w2: Optional[Tensor], gate: str) -> Tensor:
    if gate == "fc":
        return F.relu(s @ w1.t()) @ w2.t()
    k = w1.shape[-1]
    return F.conv1d(s.unsqueeze(1), w1.view(1, 1, k), padding=_conv1d_pad(w1)).squeeze(1)


def _logits_backward(
    s: Tensor, dz: Tensor, w1: Tensor, w2: Optional[Tensor], gate: str
) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """(ds, dw1, dw2) of ``z = G(s)`` given ``dz``."""
    if gate == "fc":
        h = s @ w1.t()
        # As eager's threshold_backward: exactly 0 where h <= 0, even for an infinite dz (a
        # product with the mask would give inf * 0 = NaN), and NaN where h is NaN.
        dh = torch.where(h <= 0, 0.0, dz @ w2)
        return dh @ w1, dh.t() @ s, dz.t() @ F.relu(h)
    k = w1.shape[-1]
    pad = _conv1d_pad(w1)
    ds, dw, _ = torch.ops.aten.convolution_backward(
        dz.unsqueeze(1), s.unsqueeze(1), w1.view(1, 1, k), None,
        [1], [pad], [1], False, [0], 1, [True, True, False],
    )
    return ds.squeeze(1), dw.view_as(w1), None


def channel_forward(
    avg: Optional[Tensor], mx: Optional[Tensor], w1: Tensor, w2: Optional[Tensor], gate: str
) -> Tensor:
    """``sigmoid(sum of G(s) over the pooled stats present)``: ``[B, C]``."""
    z = sum(_logits(s, w1, w2, gate) for s in (avg, mx) if s is not None)
    return torch.sigmoid(z)


def channel_backward(
    dg: Tensor, g: Tensor, avg: Optional[Tensor], mx: Optional[Tensor],
    w1: Tensor, w2: Optional[Tensor], gate: str,
) -> tuple[Optional[Tensor], Optional[Tensor], Tensor, Optional[Tensor]]:
    """(d_avg, d_max, dw1, dw2) from ``dg = dL/dg``; the shared gate's weight grads are summed."""
    dz = dg * g * (1 - g)
    grads = []
    dw1: Tensor = torch.zeros_like(w1)
    dw2 = None if w2 is None else torch.zeros_like(w2)
    for s in (avg, mx):
        if s is None:
            grads.append(None)
            continue
        ds, d1, d2 = _logits_backward(s, dz, w1, w2, gate)
        grads.append(ds)
        dw1 = dw1 + d1
        if dw2 is not None:
            dw2 = dw2 + d2
    return grads[0], grads[1], dw1, dw2


def spatial_forward(maps: Tensor, w: Tensor) -> Tensor:
    """``sigmoid(conv2d([max_C, mean_C], w))``: maps ``[B, 2, H, W]`` -> ``[B, H, W]``."""
    return torch.sigmoid(F.conv2d(maps, w, padding=(w.shape[-1] - 1) // 2)).squeeze(1)


def spatial_backward(dsa: Tensor, sa: Tensor, maps: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """(d_maps ``[B, 2, H, W]``, dw) from ``dsa = dL/dsa`` ``[B, H, W]``."""
    dz = (dsa * sa * (1 - sa)).unsqueeze(1)
    pad = (w.shape[-1] - 1) // 2
    dmaps, dw, _ = torch.ops.aten.convolution_backward(
        dz, maps, w, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, [True, True, False]
    )
    return dmaps, dw
