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

import torch
from torch import Tensor

from . import ops, reference
from ._backend import use_reference
from ._validate import check_choice, check_odd_kernel, check_weight, check_x
from .spec import ChannelSpec, SpatialSpec

__all__ = ["attention", "channel_gate", "se", "eca", "channel_attention", "spatial_attention", "cbam"]

GATES = ("fc", "conv")
POOLS = ("avg", "max", "avgmax")


def _check_channel(x: Tensor, spec: ChannelSpec, w1, b1, w2, b2) -> None:
    c = x.shape[1]
    if spec.gate == "conv":
        check_weight("w1", w1, (1, 1, None), x)
        check_odd_kernel("w1", w1.shape[-1])
        pad = (w1.shape[-1] - 1) // 2
        if spec.conv_padding == "circular" and pad > c:
            # torch's circular padding (timm's CecaModule pads with it) wraps around once at most
            raise ValueError(
                f"w1: a circular 1-D conv of kernel {w1.shape[-1]} pads {pad} channels on each side, more "
                f"than the C={c} channels it wraps around; use a kernel of at most {2 * c + 1} or zero padding"
            )
        for name, t in (("b1", b1), ("w2", w2), ("b2", b2)):
            if t is not None:
                raise ValueError(f"{name} must be None for the 'conv' gate (it has a single 1-D kernel, no bias)")
        return
    _check_matrix("w1", w1, None, c, x)
    hidden = w1.shape[0]
    _check_hidden(w1)
    if spec.gate == "linear":
        if hidden != c:
            raise ValueError(f"w1 must be [{c}, {c}] for the 'linear' gate, got {tuple(w1.shape)}")
        if w2 is not None or b2 is not None:
            raise ValueError("w2 and b2 must be None for the 'linear' gate (one layer)")
    else:
        _check_matrix("w2", w2, c, hidden, x)
        if b2 is not None:
            check_weight("b2", b2, (c,), x)
    if b1 is not None:
        check_weight("b1", b1, (hidden,), x)


def _check_matrix(name: str, w: object, rows: Optional[int], cols: int, x: Tensor) -> None:
    """A Linear's weight ``[rows, cols]`` or a 1x1 conv's ``[rows, cols, 1, 1]`` (``rows`` None: any)."""
    check_weight(name, w, None, x)
    shape = tuple(w.shape)
    if len(shape) not in (2, 4) or shape[2:] not in ((), (1, 1)) or shape[1] != cols or rows not in (None, shape[0]):
        r = "hidden" if rows is None else rows
        raise ValueError(
            f"{name} must be a Linear's [{r}, {cols}] or a 1x1 conv's [{r}, {cols}, 1, 1] for x with C={x.shape[1]}, "
            f"got {shape}"
        )


def _check_number(name: str, v: object) -> None:
    """``bn_eps`` / ``bn_momentum``: plain numbers, as ``F.batch_norm`` takes them."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        hint = (
            " (nn.BatchNorm2d's momentum=None, the cumulative average, is 1 / num_batches_tracked for each batch; "
            "FusedAttention passes that)" if name == "bn_momentum" and v is None else ""
        )
        raise TypeError(f"{name} must be a number{hint}, got {v!r}")


def _check_hidden(w1: Tensor) -> None:
    """An "fc" / "linear" gate's ``w1`` ``[hidden, ...]`` needs a row: the kernels take hidden >= 1."""
    if w1.shape[0] == 0:
        raise ValueError(f"w1 must have at least one row (a hidden width >= 1), got {tuple(w1.shape)}")


def _check_spatial(x: Tensor, spec: SpatialSpec, sw, sb, bn_weight, bn_bias, bn_mean, bn_var) -> None:
    check_weight("spatial_weight", sw, (1, spec.n_maps, None, None), x)
    if sw.shape[2] != sw.shape[3]:
        raise ValueError(f"spatial_weight must be square [1, {spec.n_maps}, k, k], got {tuple(sw.shape)}")
    check_odd_kernel("spatial_weight", sw.shape[-1])
    named = (("spatial_bias", sb), ("bn_weight", bn_weight), ("bn_bias", bn_bias), ("bn_mean", bn_mean), ("bn_var", bn_var))
    for name, t in named:
        if t is not None:
            check_weight(name, t, (1,), x)
    if not spec.norm and any(t is not None for _, t in named[1:]):
        raise ValueError("BatchNorm parameters given but the SpatialSpec has norm=False")
    if (bn_mean is None) != (bn_var is None):
        raise ValueError("bn_mean and bn_var must be given together (running statistics)")


def attention(
    x: Tensor,
    channel: Optional[ChannelSpec] = None, w1: Optional[Tensor] = None, b1: Optional[Tensor] = None,
    w2: Optional[Tensor] = None, b2: Optional[Tensor] = None,
    spatial: Optional[SpatialSpec] = None, sw: Optional[Tensor] = None, sb: Optional[Tensor] = None,
    bn_weight: Optional[Tensor] = None, bn_bias: Optional[Tensor] = None,
    bn_mean: Optional[Tensor] = None, bn_var: Optional[Tensor] = None,
    bn_eps: float = 1e-5, bn_train: bool = False, bn_momentum: float = 0.1,
) -> Tensor:
    """Any member of the gate family (:mod:`attnfused.spec`): ``y = x * ca * sa``.

    Channel weights: ``"fc"`` ``w1`` ``[hidden, C]`` (or a 1x1 conv's ``[hidden, C, 1, 1]``),
    optional ``b1``, ``w2`` ``[C, hidden]``, optional ``b2``; ``"linear"`` ``w1`` ``[C, C]``, optional
    ``b1``; ``"conv"`` ``w1`` ``[1, 1, k]``. Spatial: ``sw`` ``[1, maps, k, k]``, optional ``sb``
    ``[1]``, and with ``spatial.norm`` the BatchNorm's ``bn_*`` (``[1]`` each, running statistics
    optional). In training (``bn_train``) the BatchNorm uses batch statistics and the running ones
    are updated in place with ``bn_momentum``, as ``F.batch_norm`` does.
    """
    check_x(x)
    if channel is None and spatial is None:
        raise ValueError("attention needs a channel spec, a spatial spec, or both")
    # a weight without its stage's spec would be ignored: refuse it
    if channel is None and any(t is not None for t in (w1, b1, w2, b2)):
        raise ValueError("channel weights (w1, b1, w2, b2) given without a channel spec: pass channel=ChannelSpec(...)")
    if spatial is None and any(t is not None for t in (sw, sb, bn_weight, bn_bias, bn_mean, bn_var)):
        raise ValueError(
            "spatial weights (sw, sb, bn_*) given without a spatial spec: pass spatial=SpatialSpec(...)"
        )
    if channel is not None:
        _check_channel(x, channel, w1, b1, w2, b2)
    if spatial is not None:
        _check_spatial(x, spatial, sw, sb, bn_weight, bn_bias, bn_mean, bn_var)
        if spatial.norm:
            _check_number("bn_eps", bn_eps)
            _check_number("bn_momentum", bn_momentum)
        n = x.shape[0] * x.shape[2] * x.shape[3]
        if spatial.norm and (bn_train or bn_mean is None) and n == 1:
            # as nn.BatchNorm2d: batch statistics of a single value are meaningless (an empty batch
            # passes: an empty output, the running statistics untouched)
            when = "in training" if bn_train else "without running statistics"
            raise ValueError(f"the spatial BatchNorm {when} needs more than 1 value (B*H*W = 1)")
    return _run(
        x, channel, w1, b1, w2, b2, spatial, sw, sb, bn_weight, bn_bias, bn_mean, bn_var, bn_eps, bn_train, bn_momentum
    )


def _run(
    x: Tensor, channel: Optional[ChannelSpec], w1, b1, w2, b2, spatial: Optional[SpatialSpec], sw, sb,
    bn_weight, bn_bias, bn_mean, bn_var, bn_eps: float = 1e-5, bn_train: bool = False, bn_momentum: float = 0.1,
) -> Tensor:
    """:func:`attention` after its checks: the fused op or the reference."""
    args = (channel, w1, b1, w2, b2, spatial, sw, sb, bn_weight, bn_bias, bn_mean, bn_var, bn_eps, bn_train)
    if use_reference(x):
        return reference.attention(x, *args, bn_momentum)
    y, moments = ops.attention(x, *args)
    if moments is not None and bn_mean is not None and x.shape[0] > 0:  # (F.batch_norm: none from no values)
        _update_running_stats(moments, bn_mean, bn_var, bn_momentum, x.shape[0] * x.shape[2] * x.shape[3])
    return y


def _update_running_stats(moments: Tensor, mean: Tensor, var: Tensor, momentum: float, n: int) -> None:
    """As BatchNorm in training: unbiased batch variance into the running variance."""
    with torch.no_grad():
        batch_mean, batch_var = moments.to(mean.dtype).unbind()
        mean.mul_(1 - momentum).add_(batch_mean * momentum)
        var.mul_(1 - momentum).add_(batch_var * (n / max(n - 1, 1)) * momentum)


def _check_source_gate(x: Tensor, w1: Tensor, w2: Optional[Tensor], spec: ChannelSpec) -> None:
    """The source text's gates, all of :func:`attention`'s channel checks: "fc" weights are Linear
    matrices, checked strictly (the family's :func:`attention` also takes 1x1 conv weights)."""
    check_x(x)
    if spec.gate == "fc":
        check_weight("w1", w1, (None, x.shape[1]), x)
        _check_hidden(w1)
        check_weight("w2", w2, (x.shape[1], w1.shape[0]), x)
    else:
        _check_channel(x, spec, w1, None, w2, None)


# The source text's specs, built once (a spec's checks cost ~1 us per call); a plain dict, which
# torch.compile traces as a constant lookup.
_SOURCE_SPECS = {(g, p): ChannelSpec(gate=g, pool=p) for g in GATES for p in POOLS}
_SOURCE_SPATIAL = SpatialSpec()


def channel_gate(
    x: Tensor, w1: Tensor, w2: Optional[Tensor] = None, gate: str = "fc", pool: str = "avg"
) -> Tensor:
    """``x * sigmoid(G(pool(x)))``: SE (``gate="fc"``), ECA (``gate="conv"``), CBAM's channel stage
    (``pool="avgmax"``: the gate on avg and max stats, summed before the sigmoid). No biases."""
    check_choice("pool", pool, POOLS)
    check_choice("gate", gate, GATES)
    spec = _SOURCE_SPECS[gate, pool]
    _check_source_gate(x, w1, w2, spec)
    return _run(x, spec, w1, None, w2, None, None, None, None, None, None, None, None)


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
    _check_spatial(x, _SOURCE_SPATIAL, weight, None, None, None, None, None)
    return _run(x, None, None, None, None, None, _SOURCE_SPATIAL, weight, None, None, None, None, None)


def cbam(x: Tensor, w1: Tensor, w2: Optional[Tensor], gate: str, spatial_weight: Tensor) -> Tensor:
    """CBAM: channel attention (``gate`` "fc" or "conv") then spatial attention, as one fused block."""
    check_choice("gate", gate, GATES)
    spec = _SOURCE_SPECS[gate, "avgmax"]
    _check_source_gate(x, w1, w2, spec)
    _check_spatial(x, _SOURCE_SPATIAL, spatial_weight, None, None, None, None, None)
    return _run(x, spec, w1, None, w2, None, _SOURCE_SPATIAL, spatial_weight, None, None, None, None, None)
