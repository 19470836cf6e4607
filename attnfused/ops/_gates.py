"""The gates: small math on ``[B, C]`` and ``[B, maps, H, W]`` tensors, forward and explicit backward.

Written once here for every kernel provider and every member of the gate family
(:mod:`attnfused.spec`). Everything runs in the accumulation dtype (fp32, fp64 for fp64 inputs):
weights arrive already cast. Forward returns, beside the gates, the intermediates backward needs
(the channel logits, the "fc" gate's hidden pre-activation, the spatial conv output), so backward
repeats none of the gate's matrix products or convolutions; it applies explicit formulas (no nested
autograd, so it traces cleanly under ``torch.compile``),
following eager's conventions: ``relu'(h) = [h > 0]`` (0 where ``h <= 0`` even for an infinite
gradient), ``sigmoid' = g (1 - g)``, ``hard_sigmoid'(z) = [-3 < z < 3] / 6``.

The gates' convolutions (ECA's 1-D conv, CBAM's spatial conv: one output channel, one or two input
maps) run through the kernel provider's ``gate_conv`` / ``gate_conv_backward`` when it has them (the
compiled "cpu" and "cuda" providers: oneDNN and cuDNN are built for many channels, not these),
else through ``F.conv*d``. The whole "fc" channel gate runs through the provider's ``fc_gate`` /
``fc_gate_backward`` when it has them (the "cuda" provider: two launches forward, three backward;
the "cpu" provider: one op each way, its own small products instead of MKL's), else through
``F.linear`` and the formulas below.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..spec import ChannelSpec, SpatialSpec

Grads = dict[str, Optional[Tensor]]


# -- elementwise pieces ---------------------------------------------------------------------------


def _gate_fn(z: Tensor, name: str) -> Tensor:
    return torch.sigmoid(z) if name == "sigmoid" else F.hardsigmoid(z)


# sigmoid' and relu' go through aten's own backward ops (eager autograd's): one call each where
# the formulas in elementwise ops took 2-4, a few us apiece on a gate's small tensors. Not the hard
# sigmoid's: aten.hardsigmoid_backward scales by a float32 1/6 (3e-8 relative error in fp64).


def _gate_fn_backward(dg: Tensor, z: Tensor, g: Tensor, name: str) -> Tensor:
    """``dg * g (1 - g)`` (sigmoid; ``g`` its output) or ``dg [-3 < z < 3] / 6`` (hard sigmoid)."""
    if name == "sigmoid":
        return torch.ops.aten.sigmoid_backward(dg, g)
    return torch.where((z > -3) & (z < 3), dg / 6, 0.0)


def _act(h: Tensor, name: str) -> Tensor:
    return F.relu(h) if name == "relu" else F.silu(h)


def _act_backward(dr: Tensor, h: Tensor, name: str) -> Tensor:
    if name == "relu":
        return torch.ops.aten.threshold_backward(dr, h, 0)  # 0 where h <= 0: no inf * 0 = NaN
    s = torch.sigmoid(h)
    return dr * (s * (1 + h * (1 - s)))


# -- the gates' convolutions (stride 1, zero padding, one output channel) --------------------------


def _conv(inp: Tensor, weight: Tensor, bias: Optional[Tensor], padding: tuple[int, ...], kern) -> Tensor:
    """``F.conv1d`` (3-D ``inp``) or ``F.conv2d`` (4-D), by the provider's ``gate_conv`` if any."""
    conv = getattr(kern, "gate_conv", None)
    if conv is None:
        return (F.conv1d if inp.dim() == 3 else F.conv2d)(inp, weight, bias, padding=padding)
    if inp.dim() == 3:  # 1-D as 2-D with H = 1
        return conv(inp.unsqueeze(2), weight.unsqueeze(2), bias, (0, padding[0])).squeeze(2)
    return conv(inp, weight, bias, padding)


def _conv_backward(
    dz: Tensor, inp: Tensor, weight: Tensor, padding: tuple[int, ...], bias: bool, kern
) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """(d inp, d weight, d bias or None) of :func:`_conv`."""
    backward = getattr(kern, "gate_conv_backward", None)
    if backward is None:
        n = len(padding)
        return torch.ops.aten.convolution_backward(
            dz, inp, weight, [1] if bias else None, [1] * n, list(padding), [1] * n, False, [0] * n, 1, [True, True, bias]
        )
    if inp.dim() == 3:
        di, dw, db = backward(dz.unsqueeze(2), inp.unsqueeze(2), weight.unsqueeze(2), (0, padding[0]), bias)
        di, dw = di.squeeze(2), dw.squeeze(2)
    else:
        di, dw, db = backward(dz, inp, weight, padding, bias)
    return di, dw, db if bias else None


# -- channel gate -------------------------------------------------------------------------------


def _conv1d_pad(w: Tensor) -> int:
    return (w.shape[-1] - 1) // 2


def _pad_circular(s: Tensor, p: int) -> Tensor:
    return torch.cat((s[..., s.shape[-1] - p:], s, s[..., :p]), dim=-1) if p else s


def _n_inputs(spec: ChannelSpec) -> int:
    """How many pooled statistics go through the gate's layers: 2 for ``"avgmax"``."""
    return 2 if spec.pool == "avgmax" else 1


def _stacked(avg: Optional[Tensor], mx: Optional[Tensor], pool: str) -> Tensor:
    """The gate's input rows: ``[B, C]``, or ``[2B, C]`` for ``"avgmax"`` (avg rows, then max rows)
    so that each layer is one matrix product for both statistics."""
    if pool == "avgmax_mean":
        return 0.5 * (avg + mx)
    if pool == "avgmax":
        return torch.cat((avg, mx))
    return avg if avg is not None else mx


def _fold(rows: Tensor, n: int) -> Tensor:
    """``[n*B, ...] -> [B, ...]``: the sum over the stacked statistics (avg's rows + max's)."""
    if n == 1:
        return rows
    b = rows.shape[0] // n
    return rows[:b] + rows[b:]


def _logits(s: Tensor, spec: ChannelSpec, w: dict, kern) -> tuple[Tensor, Optional[Tensor]]:
    """(``G(s)`` row by row, the ``"fc"`` gate's hidden pre-activation or None)."""
    if spec.gate == "fc":
        h = F.linear(s, w["w1"], w["b1"])
        return F.linear(_act(h, spec.act), w["w2"], w["b2"]), h
    if spec.gate == "linear":
        return F.linear(s, w["w1"], w["b1"]), None
    p = _conv1d_pad(w["w1"])
    if spec.conv_padding == "circular":
        return _conv(_pad_circular(s.unsqueeze(1), p), w["w1"], None, (0,), kern).squeeze(1), None
    return _conv(s.unsqueeze(1), w["w1"], None, (p,), kern).squeeze(1), None


def _fused_fc_gate(kern, spec: ChannelSpec, s: Tensor, name: str):
    """The provider's ``fc_gate`` / ``fc_gate_backward`` for this gate, or None: none for other
    gates, none where the provider has none, and none above the provider's ``fc_gate_max_rows``
    stacked rows where it sets one (the "cpu" provider: its products are written for a few rows,
    where they beat MKL's; MKL wins on many)."""
    fused = getattr(kern, name, None) if spec.gate == "fc" else None
    max_rows = getattr(kern, "fc_gate_max_rows", None)
    if fused is not None and max_rows is not None and s.shape[0] > max_rows:
        return None
    return fused


def channel_forward(
    avg: Optional[Tensor], mx: Optional[Tensor], spec: ChannelSpec, w: dict, kern=None
) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """(``ca = gate_fn(z)``, the logits ``z = sum over pooled stats of G(s)``, both ``[B, C]``, and the
    ``"fc"`` gate's hidden pre-activation ``[n*B, C/r]`` or None: what backward needs, so that it
    repeats none of the gate's matrix products). ``kern``: the kernel provider (for its gate_conv)."""
    s = _stacked(avg, mx, spec.pool)
    fused = _fused_fc_gate(kern, spec, s, "fc_gate")
    if fused is not None:  # the "cuda" and "cpu" providers: the whole gate in one op
        return fused(s, w, _n_inputs(spec), spec.act, spec.gate_fn)
    zs, h = _logits(s, spec, w, kern)
    z = _fold(zs, _n_inputs(spec))
    return _gate_fn(z, spec.gate_fn), z, h


def channel_backward(
    dca: Tensor, avg: Optional[Tensor], mx: Optional[Tensor], z: Tensor, ca: Tensor, h: Optional[Tensor],
    spec: ChannelSpec, w: dict, kern=None,
) -> tuple[Optional[Tensor], Optional[Tensor], Grads]:
    """(d_avg, d_max, weight grads) from ``dca = dL/dca`` and :func:`channel_forward`'s ``ca``, ``z``,
    ``h``.

    Every statistic's logits receive the same ``dz``, so the products that do not involve the
    statistic itself run once on ``[B, ...]``: ``dW2 = dz^T sum_i act(h_i)``, ``d act = dz W2``, and
    for the one-layer gates ``dW = dz^T sum_i s_i`` with one input gradient for all."""
    n = _n_inputs(spec)
    s = _stacked(avg, mx, spec.pool)
    grads: Grads = {}
    fused = _fused_fc_gate(kern, spec, s, "fc_gate_backward")
    if fused is not None:
        ds, grads["w1"], grads["b1"], grads["w2"], grads["b2"] = fused(dca, s, z, ca, h, w, n, spec.act, spec.gate_fn)
        return _pooled_grads(ds, dca.shape[0], spec, grads)
    dz = _gate_fn_backward(dca, z, ca, spec.gate_fn)
    if spec.gate == "fc":
        grads["w2"] = dz.t() @ _fold(_act(h, spec.act), n)
        if w["b2"] is not None:
            grads["b2"] = dz.sum(0) * n
        dr = dz @ w["w2"]
        dh = _act_backward(torch.cat([dr] * n) if n > 1 else dr, h, spec.act)  # cat: 1 us, repeat: 6
        grads["w1"] = dh.t() @ s
        if w["b1"] is not None:
            grads["b1"] = dh.sum(0)
        ds = dh @ w["w1"]
    elif spec.gate == "linear":
        grads["w1"] = dz.t() @ _fold(s, n)
        if w["b1"] is not None:
            grads["b1"] = dz.sum(0) * n
        ds = dz @ w["w1"]
    else:
        ds, grads["w1"] = _conv1d_backward(dz, _fold(s, n), w["w1"], spec.conv_padding, kern)
    return _pooled_grads(ds, dz.shape[0], spec, grads)


def _pooled_grads(
    ds: Tensor, b: int, spec: ChannelSpec, grads: Grads
) -> tuple[Optional[Tensor], Optional[Tensor], Grads]:
    """(d_avg, d_max, grads) from the gradient of the gate's input rows ``ds`` (``[2B, C]`` when
    the "fc" gate stacked avg and max rows, else ``[B, C]``)."""
    if spec.pool == "avgmax_mean":
        return 0.5 * ds, 0.5 * ds, grads
    if spec.pool == "avgmax":
        return (ds[:b], ds[b:], grads) if ds.shape[0] == 2 * b else (ds, ds, grads)
    return (ds, None, grads) if spec.pool == "avg" else (None, ds, grads)


def _conv1d_backward(dz: Tensor, s: Tensor, wk: Tensor, padding: str, kern) -> tuple[Tensor, Tensor]:
    """(ds, dw) of the 1-D gate conv over channels (zero or circular padding)."""
    p = _conv1d_pad(wk)
    circular = padding == "circular"
    s_in = _pad_circular(s.unsqueeze(1), p) if circular else s.unsqueeze(1)
    ds, dw, _ = _conv_backward(dz.unsqueeze(1), s_in, wk, (0 if circular else p,), False, kern)
    ds = ds.squeeze(1)
    if circular and p:
        c = s.shape[-1]
        core = ds[:, p:p + c].clone()
        core[:, c - p:] += ds[:, :p]  # the left pad held s[c-p:]
        core[:, :p] += ds[:, p + c:]  # the right pad held s[:p]
        ds = core
    return ds, dw


# -- spatial gate -------------------------------------------------------------------------------


def spatial_maps(m: Tensor, mean: Tensor, spec: SpatialSpec) -> Tensor:
    """The conv's input ``[B, maps, H, W]`` from ``max_C`` and ``mean_C`` maps ``[B, H, W]``."""
    if spec.maps == "max_mean":
        return torch.stack((m, mean), dim=1)
    if spec.maps == "mean_max":
        return torch.stack((mean, m), dim=1)
    return (0.5 * (mean + m)).unsqueeze(1)


def spatial_maps_backward(dmaps: Tensor, spec: SpatialSpec) -> tuple[Tensor, Tensor]:
    """(d max_C, d mean_C) from ``d maps``."""
    if spec.maps == "max_mean":
        return dmaps[:, 0], dmaps[:, 1]
    if spec.maps == "mean_max":
        return dmaps[:, 1], dmaps[:, 0]
    half = 0.5 * dmaps[:, 0]
    return half, half


def _spatial_conv(maps: Tensor, w: dict, kern) -> Tensor:
    pad = (w["weight"].shape[-1] - 1) // 2
    return _conv(maps, w["weight"], w["bias"], (pad, pad), kern)


def _norm_stats(z: Tensor, w: dict) -> tuple[Tensor, Tensor]:
    """(mean, biased var) the BatchNorm uses: the batch's in training, else the running ones."""
    if w["bn_train"]:
        if z.numel() == 0:  # an empty batch normalises nothing (and var() of nothing warns); unused
            return z.new_zeros(()), z.new_ones(())
        return z.mean(), z.var(unbiased=False)
    return w["bn_mean"].reshape(()), w["bn_var"].reshape(())


def spatial_forward(
    maps: Tensor, spec: SpatialSpec, w: dict, kern=None
) -> tuple[Tensor, Optional[Tensor], Tensor]:
    """(``sa`` ``[B, H, W]``, batch moments ``[mean, var]`` of the conv output (zeros with running
    statistics, None without BN), the conv output ``z`` ``[B, 1, H, W]``: backward's starting
    point, not recomputed there)."""
    z = conv_out = _spatial_conv(maps, w, kern)
    moments = None
    if spec.norm:
        mean, var = _norm_stats(z, w)
        z = (z - mean) * torch.rsqrt(var + w["bn_eps"]) * w["bn_weight"] + w["bn_bias"]
        moments = torch.stack((mean, var)) if w["bn_train"] else z.new_zeros(2)
    return _gate_fn(z, spec.gate_fn).squeeze(1), moments, conv_out


def spatial_backward(
    dsa: Tensor, maps: Tensor, z: Tensor, sa: Tensor, spec: SpatialSpec, w: dict, kern=None
) -> tuple[Tensor, Grads]:
    """(d maps, weight grads) from ``dsa = dL/dsa`` ``[B, H, W]``, the conv output ``z`` and the gate
    ``sa`` ``[B, 1, H, W]``."""
    grads: Grads = {}
    zn = z
    if spec.norm:
        mean, var = _norm_stats(z, w)
        rstd = torch.rsqrt(var + w["bn_eps"])
        zhat = (z - mean) * rstd
        zn = zhat * w["bn_weight"] + w["bn_bias"]
    dzn = _gate_fn_backward(dsa.unsqueeze(1), zn, sa, spec.gate_fn)
    dz = dzn
    if spec.norm:
        grads["bn_weight"] = (dzn * zhat).sum().reshape(1)
        grads["bn_bias"] = dzn.sum().reshape(1)
        dzhat = dzn * w["bn_weight"]
        if w["bn_train"]:  # the batch statistics depend on z too
            dz = rstd * (dzhat - dzhat.mean() - zhat * (dzhat * zhat).mean())
        else:
            dz = dzhat * rstd
    pad = (w["weight"].shape[-1] - 1) // 2
    dmaps, dw, db = _conv_backward(dz, maps, w["weight"], (pad, pad), w["bias"] is not None, kern)
    grads["weight"] = dw
    if w["bias"] is not None:
        grads["bias"] = db
    return dmaps, grads
