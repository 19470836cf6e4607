"""The block op: one ``torch.library`` custom op for SE, ECA, channel/spatial attention and CBAM.

``attnfused::attention(x, w1, w2, gate, pool, sw)`` computes

    y = x * ca[b, c] * sa[b, h, w]

with the channel stage present iff ``w1`` is given (``ca = sigmoid(sum G(pool_P x))``, ``G`` the FC
gate ``w2 @ relu(w1 @ s)`` or the 1-D conv gate ``w1``), and the spatial stage present iff ``sw``
is given (``sa = sigmoid(conv2d([max_C x1, mean_C x1], sw))`` with ``x1 = x * ca``).

It is one autograd node: its backward (``attnfused::attention_backward``, also an opaque op so that
``torch.compile`` traces it as one call) writes ``dx`` exactly once, following DESIGN.md §4.
Saved for backward: ``x`` and small tensors only. Passes over full-size tensors (N = numel(x)):

=============== ======================================== ======================================
block           forward                                  backward
=============== ======================================== ======================================
channel only    pool_hw (N) + scale (2N) = 3N            dot_hw (2N) + grad_input (2N) = 4N
spatial only    pool_c (N) + scale (2N) = 3N             dot_c (2N) + grad_input (2N) = 4N
CBAM            pool_hw + pool_c + scale = 4N            dot_c + dot_hw + grad_input = 6N
=============== ======================================== ======================================
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._backend import kernels_for
from ..kernels._layout import acc_dtype, empty_output
from . import _gates

__all__ = ["attention"]

# Outputs of the forward op: y, then what backward needs (small; unused stages give empty tensors).
_SAVED = ("ca", "avg", "mx", "amp", "sa", "maps", "amc")


def _stage_flags(w1: Optional[Tensor], pool: str, sw: Optional[Tensor]) -> tuple[bool, bool, bool]:
    """(uses avg pooling, uses max pooling, has spatial stage)."""
    has_c = w1 is not None
    return has_c and pool != "max", has_c and pool != "avg", sw is not None


def _small_outputs(x: Tensor, w1: Optional[Tensor], pool: str, sw: Optional[Tensor]) -> list[Tensor]:
    """Empty tensors with the shapes/dtypes of the saved outputs (shared by impl and fake)."""
    b, c, h, w = x.shape
    acc = acc_dtype(x.dtype)
    use_avg, use_max, has_s = _stage_flags(w1, pool, sw)
    has_c = w1 is not None

    def t(shape, on, dtype=acc):
        return x.new_empty(shape if on else (0,), dtype=dtype)

    return [
        t((b, c), has_c),
        t((b, c), use_avg),
        t((b, c), use_max),
        t((b, c), use_max, torch.int32),
        t((b, h * w), has_s),
        t((b, 2, h, w), has_s),
        t((b, h * w), has_s, torch.int32),
    ]


@torch.library.custom_op("attnfused::attention", mutates_args=())
def _attention_fwd(
    x: Tensor, w1: Optional[Tensor], w2: Optional[Tensor], gate: str, pool: str, sw: Optional[Tensor]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    kern = kernels_for(x.device)
    out = dict(zip(_SAVED, _small_outputs(x, w1, pool, sw)))
    use_avg, use_max, has_s = _stage_flags(w1, pool, sw)
    acc = acc_dtype(x.dtype)
    b, c, h, w = x.shape
    ca = sa = None
    # Autocast must not touch the small math: it is done in ``acc`` whatever the context.
    with torch.autocast(x.device.type, enabled=False):
        if w1 is not None:
            avg, mx, amp = kern.pool_hw(x, use_max)
            w2a = None if w2 is None else w2.to(acc)
            ca = _gates.channel_forward(avg if use_avg else None, mx, w1.to(acc), w2a, gate)
            out["ca"] = ca
            if use_avg:
                out["avg"] = avg
            if use_max:
                out["mx"], out["amp"] = mx, amp
        if has_s:
            m, mean, amc = kern.pool_c(x, ca)
            maps = torch.stack((m, mean), dim=1).view(b, 2, h, w)
            sa = _gates.spatial_forward(maps, sw.to(acc)).reshape(b, h * w)
            out.update(sa=sa, maps=maps, amc=amc)
    y = kern.scale(x, ca, sa)
    return (y, *(out[k] for k in _SAVED))


@_attention_fwd.register_fake
def _(x, w1, w2, gate, pool, sw):
    return (empty_output(x), *_small_outputs(x, w1, pool, sw))


@torch.library.custom_op("attnfused::attention_backward", mutates_args=())
def _attention_bwd(
    dy: Tensor, x: Tensor, w1: Optional[Tensor], w2: Optional[Tensor], gate: str, pool: str,
    sw: Optional[Tensor], ca: Tensor, avg: Tensor, mx: Tensor, amp: Tensor, sa: Tensor,
    maps: Tensor, amc: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, dw1, dw2, dsw); gradients of absent weights are empty tensors."""
    kern = kernels_for(x.device)
    use_avg, use_max, has_s = _stage_flags(w1, pool, sw)
    has_c = w1 is not None
    acc = acc_dtype(x.dtype)
    b, c, h, w = x.shape
    dw1 = dw2 = dsw = None
    terms: dict[str, Tensor] = {}
    with torch.autocast(x.device.type, enabled=False):
        if has_s:
            dsa = kern.dot_c(dy, x, ca if has_c else None)
            dmaps, dsw = _gates.spatial_backward(dsa.view(b, h, w), sa.view(b, h, w), maps, sw.to(acc))
            dmaps = dmaps.reshape(b, 2, h * w)
            terms.update(sa=sa, dm=dmaps[:, 0].contiguous(), da=(dmaps[:, 1] / c).contiguous(), amc=amc)
        if has_c:
            # dL/dca = sum_P m * x, with m the spatial stage's gradient wrt x1 (or dy without one).
            dca = kern.dot_hw(dy, x, **terms)
            w2a = None if w2 is None else w2.to(acc)
            d_avg, d_max, dw1, dw2 = _gates.channel_backward(
                dca, ca, avg if use_avg else None, mx if use_max else None, w1.to(acc), w2a, gate
            )
            terms["ca"] = ca
            if use_avg:
                terms["davg"] = d_avg / (h * w)
            if use_max:
                terms.update(dmax=d_max, amp=amp)
    dx = kern.grad_input(dy, x, **terms)

    def cast(g: Optional[Tensor], like: Optional[Tensor]) -> Tensor:
        return x.new_empty(0) if like is None else g.to(like.dtype)

    return dx, cast(dw1, w1), cast(dw2, w2), cast(dsw, sw)


@_attention_bwd.register_fake
def _(dy, x, w1, w2, gate, pool, sw, *saved):
    def like(t: Optional[Tensor]) -> Tensor:
        return x.new_empty(0) if t is None else torch.empty_like(t)

    return empty_output(x), like(w1), like(w2), like(sw)


def _setup_context(ctx, inputs, output) -> None:
    x, w1, w2, gate, pool, sw = inputs
    ctx.gate, ctx.pool = gate, pool
    ctx.save_for_backward(x, w1, w2, sw, *output[1:])
    ctx.mark_non_differentiable(*output[1:])


def _backward(ctx, dy, *_unused):
    x, w1, w2, sw, *saved = ctx.saved_tensors
    dx, dw1, dw2, dsw = _attention_bwd(dy, x, w1, w2, ctx.gate, ctx.pool, sw, *saved)
    return (
        dx,
        None if w1 is None else dw1,
        None if w2 is None else dw2,
        None,
        None,
        None if sw is None else dsw,
    )


_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def attention(
    x: Tensor, w1: Optional[Tensor], w2: Optional[Tensor], gate: str, pool: str, sw: Optional[Tensor]
) -> Tensor:
    """Run the fused block (inputs already validated by :mod:`attnfused.functional`)."""
    return _attention_fwd(x, w1, w2, gate, pool, sw)[0]
