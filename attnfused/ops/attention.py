"""The block op: one ``torch.library`` custom op for every SE / ECA / CBAM variant of the family.

``attnfused::attention(x, channel, w1, b1, w2, b2, spatial, sw, sb, bn_weight, bn_bias, bn_mean,
bn_var, bn_eps, bn_train)`` computes

    y = x * ca[b, c] * sa[b, h, w]

with the channel stage present iff ``channel`` (an encoded :class:`~attnfused.spec.ChannelSpec`)
is non-empty and the spatial stage iff ``spatial`` (an encoded :class:`~attnfused.spec.SpatialSpec`)
is; ``sa`` is computed from ``x1 = x * ca``. It is one autograd node: its backward
(``attnfused::attention_backward``, also an opaque op so that ``torch.compile`` traces it as one
call) writes ``dx`` exactly once, following DESIGN.md §4. Saved for backward: ``x`` and small
tensors only. Passes over full-size tensors (N = numel(x)), for every member of the family:

=============== ======================================== ======================================
block           forward                                  backward
=============== ======================================== ======================================
channel only    pool_hw (N) + scale (2N) = 3N            dot_hw (2N) + grad_input (2N) = 4N
spatial only    pool_c (N) + scale (2N) = 3N             dot_c (2N) + grad_input (2N) = 4N
CBAM            pool_hw + pool_c + scale = 4N            dot_c + dot_hw + grad_input = 6N
=============== ======================================== ======================================

The "cpu" provider runs CBAM's spatial stage (pool_c, gate, scale) sample by sample in one call
(``spatial_stage``), so that on CPU its scale re-reads each sample of ``x`` from cache: still 4N of
requests, 3N from DRAM. Not with a spatial BatchNorm (training needs the whole batch's statistics
first; eval could fold in, not done yet).

In training with a spatial BatchNorm the op returns the batch moments of the conv output; the
caller (``attnfused.functional``) updates the running statistics from them, outside the op.

Eager calls run the same forward and backward bodies through a plain ``autograd.Function``
(:class:`AttnfusedAttention`, the ``grad_fn`` users see), or the forward body alone where no
gradient is needed; under ``torch.compile`` the custom ops are what gets traced. ``opcheck`` tests
the custom ops, the block tests both paths.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Optional

import torch
from torch import Tensor

from .._backend import kernels_for
from ..kernels._layout import acc_dtype, empty_output
from ..spec import ChannelSpec, SpatialSpec
from . import _gates

try:  # FakeTensors (torch.compile's tracing, FakeTensorMode): the custom op's fake kernel answers
    from torch._subclasses.fake_tensor import is_fake
except ImportError:  # pragma: no cover (every torch this package supports has it)
    def is_fake(t: Tensor) -> bool:
        return False

__all__ = ["attention"]

# Outputs of the forward op after y: what backward needs (small; absent stages give empty tensors),
# the gates' intermediates included so that backward repeats none of their matrix products or
# convolutions: ``zc`` the channel logits, ``hid`` the "fc" gate's hidden pre-activation (one row
# block per pooled statistic), ``zs`` the spatial conv output. ``moments`` stays last (the caller's).
_SAVED = ("ca", "avg", "mx", "amp", "sa", "maps", "amc", "zc", "hid", "zs", "moments")
_INT32_SAVED = ("amp", "amc")
_CHANNEL_W = ("w1", "b1", "w2", "b2")
_SPATIAL_W = ("weight", "bias", "bn_weight", "bn_bias")


@functools.lru_cache(maxsize=64)
def _specs(channel: str, spatial: str) -> tuple[Optional[ChannelSpec], Optional[SpatialSpec]]:
    """The specs from their encodings (cached: parsing them cost a few us per call)."""
    return (ChannelSpec.decode(channel) if channel else None, SpatialSpec.decode(spatial) if spatial else None)


def _pools(cs: Optional[ChannelSpec]) -> tuple[bool, bool]:
    """(uses avg pooling, uses max pooling)."""
    if cs is None:
        return False, False
    return cs.pool != "max", cs.pool != "avg"


def _small_outputs(
    x: Tensor, cs: Optional[ChannelSpec], ss: Optional[SpatialSpec], w1: Optional[Tensor]
) -> list[Tensor]:
    """Empty tensors with the shapes/dtypes of the saved outputs: the fake forward's (opcheck
    checks the real forward against it; absent stages give shape (0,) in both)."""
    b, c, h, w = x.shape
    fc = cs is not None and cs.gate == "fc"
    n_stats = 2 if fc and cs.pool == "avgmax" else 1
    acc = acc_dtype(x.dtype)
    use_avg, use_max = _pools(cs)

    def t(shape, on, dtype=acc):
        return x.new_empty(shape if on else (0,), dtype=dtype)

    return [
        t((b, c), cs is not None),
        t((b, c), use_avg),
        t((b, c), use_max),
        t((b, c), use_max, torch.int32),
        t((b, h * w), ss is not None),
        t((b, ss.n_maps if ss else 0, h, w), ss is not None),
        t((b, h * w), ss is not None, torch.int32),
        t((b, c), cs is not None),
        t((n_stats * b, w1.shape[0] if fc else 0), fc),
        t((b, 1, h, w), ss is not None),
        t((2,), ss is not None and ss.norm),
    ]


def _cast(t: Optional[Tensor], acc: torch.dtype) -> Optional[Tensor]:
    return t if t is None or t.dtype == acc else t.to(acc)


def _channel_weights(w1, b1, w2, b2, cs: ChannelSpec, acc: torch.dtype) -> dict:
    """Weights in the accumulation dtype and the shapes the gate math uses (1x1 conv -> matrix)."""
    if cs.gate == "conv":
        return {"w1": _cast(w1, acc).reshape(1, 1, -1), "b1": None, "w2": None, "b2": None}
    return {
        "w1": _matrix(_cast(w1, acc)),
        "b1": _cast(b1, acc),
        "w2": None if w2 is None else _matrix(_cast(w2, acc)),
        "b2": _cast(b2, acc),
    }


def _matrix(w: Tensor) -> Tensor:
    """A Linear's weight as it is, a 1x1 conv's ``[out, in, 1, 1]`` as ``[out, in]``."""
    return w if w.dim() == 2 else w.reshape(w.shape[0], -1)


def _spatial_weights(sw, sb, bn_weight, bn_bias, bn_mean, bn_var, bn_eps, bn_train, acc) -> dict:
    """As :func:`_channel_weights`; a BatchNorm without affine weights gets the numbers 1 and 0."""
    return {
        "weight": _cast(sw, acc), "bias": _cast(sb, acc),
        "bn_weight": 1.0 if bn_weight is None else _cast(bn_weight, acc).reshape(()),
        "bn_bias": 0.0 if bn_bias is None else _cast(bn_bias, acc).reshape(()),
        "bn_mean": _cast(bn_mean, acc), "bn_var": _cast(bn_var, acc), "bn_eps": bn_eps,
        "bn_train": bn_train or bn_mean is None,
    }


def _forward_op(
    x: Tensor, channel: str, w1: Optional[Tensor], b1: Optional[Tensor], w2: Optional[Tensor],
    b2: Optional[Tensor], spatial: str, sw: Optional[Tensor], sb: Optional[Tensor],
    bn_weight: Optional[Tensor], bn_bias: Optional[Tensor], bn_mean: Optional[Tensor],
    bn_var: Optional[Tensor], bn_eps: float, bn_train: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    y, small = _forward_body(
        (x, channel, w1, b1, w2, b2, spatial, sw, sb, bn_weight, bn_bias, bn_mean, bn_var, bn_eps, bn_train)
    )
    acc = acc_dtype(x.dtype)
    for key in _SAVED:  # absent stages: empty tensors with the dtypes _small_outputs gives them
        if key not in small:
            small[key] = x.new_empty(0, dtype=torch.int32 if key in _INT32_SAVED else acc)
    return (y, *(small[k] for k in _SAVED))


def _forward_body(inputs: tuple, for_backward: bool = True) -> tuple[Tensor, dict]:
    """``_forward_op``'s work without the absent stages' placeholder outputs (the eager path saves
    None for them). ``for_backward=False``: no backward follows, so the channel max's argmax may be
    skipped (``amp`` None)."""
    x, channel, w1, b1, w2, b2, spatial, sw, sb, bn_weight, bn_bias, bn_mean, bn_var, bn_eps, bn_train = inputs
    cs, ss = _specs(channel, spatial)
    acc = acc_dtype(x.dtype)
    cw = _channel_weights(w1, b1, w2, b2, cs, acc) if cs is not None else None
    sw_ = _spatial_weights(sw, sb, bn_weight, bn_bias, bn_mean, bn_var, bn_eps, bn_train, acc) if ss is not None else None
    return _forward(kernels_for(x.device), x, cs, ss, cw, sw_, for_backward)


def _forward(kern, x: Tensor, cs, ss, cw, sw_, for_backward: bool = True) -> tuple[Tensor, dict]:
    """``y`` and the saved small tensors of the stages present."""
    out: dict[str, Tensor] = {}
    use_avg, use_max = _pools(cs)
    b, c, h, w = x.shape
    ca = sa = None
    with _no_autocast(x):
        channel_stage = getattr(kern, "channel_stage", None) if cs is not None and ss is None else None
        staged = channel_stage(x, cs, cw, for_backward) if channel_stage is not None else None
        if staged is not None:  # the CPU provider: pool_hw, gate and scale per sample (one call)
            _keep_staged_channel(out, cs, staged[1:], for_backward)
            return staged[0], out
        fused_spatial = getattr(kern, "spatial_stage", None) if ss is not None and not ss.norm else None
        # The CPU provider's CBAM: the channel stage inside the spatial stage's per-sample loop too.
        takes_gate = getattr(kern, "stage_takes_gate", None) if fused_spatial is not None and cs is not None else None
        channel_too = takes_gate is not None and takes_gate(x, cs, cw)
        if cs is not None and not channel_too:
            avg, mx, amp = kern.pool_hw(x, use_max, want_arg=for_backward)
            ca, zc, hid = _gates.channel_forward(avg if use_avg else None, mx, cs, cw, kern)
            _keep_channel(out, cs, avg, mx, amp, ca, zc, hid)
        if fused_spatial is not None:  # the CPU provider: pool_c, gate and scale per sample (one call)
            hard = ss.gate_fn == "hard_sigmoid"
            if channel_too:
                y, maps, amc, sa, out["zs"], *channel = fused_spatial(
                    x, None, sw_["weight"], sw_["bias"], ss.maps, hard, channel=(cs, cw), want_arg=for_backward
                )
                _keep_staged_channel(out, cs, channel, for_backward)
            else:
                y, maps, amc, sa, out["zs"] = fused_spatial(
                    x, ca, sw_["weight"], sw_["bias"], ss.maps, hard, want_arg=for_backward
                )
            out.update(sa=sa, maps=maps, amc=amc)
        elif ss is not None:
            m, mean, amc = kern.pool_c(x, ca)
            maps = _gates.spatial_maps(m.view(b, h, w), mean.view(b, h, w), ss)
            sa, moments, out["zs"] = _gates.spatial_forward(maps, ss, sw_, kern)
            sa = sa.reshape(b, h * w)
            out.update(sa=sa, maps=maps, amc=amc)
            if ss.norm:
                out["moments"] = moments
    if fused_spatial is None:
        y = kern.scale(x, ca, sa)
    return y, out


def _keep_channel(out: dict, cs: ChannelSpec, avg, mx, amp, ca: Tensor, zc: Tensor, hid: Optional[Tensor]) -> None:
    """The channel stage's outputs backward reads, into ``out`` (the pools the gate uses)."""
    use_avg, use_max = _pools(cs)
    out.update(ca=ca, zc=zc)
    if hid is not None:
        out["hid"] = hid
    if use_avg:
        out["avg"] = avg
    if use_max:
        out["mx"], out["amp"] = mx, amp


def _keep_staged_channel(out: dict, cs: ChannelSpec, staged, for_backward: bool) -> None:
    """:func:`_keep_channel` for a CPU stage's ``(avg, mx, amp, ca, zc, h)``, whose placeholders are
    empty tensors: amp without a backward to come, h for gates other than "fc"."""
    avg, mx, amp, ca, zc, hid = staged
    _keep_channel(out, cs, avg, mx, amp if for_backward else None, ca, zc, hid if cs.gate == "fc" else None)


def _no_autocast(x: Tensor):
    """Autocast must not touch the small math (it runs in ``acc`` whatever the context); entering
    the context costs a few microseconds per call, so only when autocast is on."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


# The op's body is a plain function too: eager calls reach it through AttnfusedAttention (below).
_attention_fwd = torch.library.custom_op("attnfused::attention", mutates_args=())(_forward_op)


@_attention_fwd.register_fake
def _(x, channel, w1, b1, w2, b2, spatial, *rest):
    return (empty_output(x), *_small_outputs(x, *_specs(channel, spatial), w1))


def _backward_body(
    dy: Tensor, x: Tensor, channel: str, w1: Optional[Tensor], b1: Optional[Tensor],
    w2: Optional[Tensor], b2: Optional[Tensor], spatial: str, sw: Optional[Tensor],
    sb: Optional[Tensor], bn_weight: Optional[Tensor], bn_bias: Optional[Tensor],
    bn_mean: Optional[Tensor], bn_var: Optional[Tensor], bn_eps: float, bn_train: bool,
    ca: Optional[Tensor], avg: Optional[Tensor], mx: Optional[Tensor], amp: Optional[Tensor],
    sa: Optional[Tensor], maps: Optional[Tensor], amc: Optional[Tensor], zc: Optional[Tensor],
    hid: Optional[Tensor], zs: Optional[Tensor],
) -> tuple[Tensor, dict[str, Optional[Tensor]]]:
    """(dx, the weight gradients by _GRAD_KEYS name, in the accumulation dtype and the gate math's
    shapes). Saved tensors of absent stages are not read (None or the op's empty placeholders)."""
    cs, ss = _specs(channel, spatial)
    kern = kernels_for(x.device)
    dense_grad = getattr(kern, "dense_grad", None)
    if dense_grad is not None:
        dy = dense_grad(dy, x)
    use_avg, use_max = _pools(cs)
    acc = acc_dtype(x.dtype)
    b, c, h, w = x.shape
    grads: dict[str, Optional[Tensor]] = {}
    terms: dict[str, Tensor] = {}
    with _no_autocast(x):
        if ss is not None:
            dsa = kern.dot_c(dy, x, ca if cs is not None else None)
            sw_ = _spatial_weights(sw, sb, bn_weight, bn_bias, bn_mean, bn_var, bn_eps, bn_train, acc)
            dmaps, sgrads = _gates.spatial_backward(dsa.view(b, h, w), maps, zs, sa.view(b, 1, h, w), ss, sw_, kern)
            dm, dmean = _gates.spatial_maps_backward(dmaps, ss)
            grads.update({"s" + k: v for k, v in sgrads.items()})
            terms.update(sa=sa, dm=dm.reshape(b, h * w).contiguous(), da=(dmean / c).reshape(b, h * w).contiguous(), amc=amc)
        if cs is not None:
            # dL/dca = sum_P m * x, with m the spatial stage's gradient wrt x1 (or dy without one).
            dca = kern.dot_hw(dy, x, **terms)
            d_avg, d_max, cgrads = _gates.channel_backward(
                dca, avg if use_avg else None, mx if use_max else None, zc, ca, hid if cs.gate == "fc" else None,
                cs, _channel_weights(w1, b1, w2, b2, cs, acc), kern,
            )
            grads.update(cgrads)
            terms["ca"] = ca
            if use_avg:
                terms["davg"] = d_avg / (h * w)
            if use_max:
                terms.update(dmax=d_max, amp=amp)
    return kern.grad_input(dy, x, **terms), grads


# The weight gradients' names in _backward_body's dict, in the backward op's output order.
_GRAD_KEYS = ("w1", "b1", "w2", "b2", "sweight", "sbias", "sbn_weight", "sbn_bias")


def _weight_grad(g: Optional[Tensor], like: Tensor) -> Tensor:
    """A gradient in its weight's shape and dtype (zeros where no path reached it, e.g. a
    BatchNorm bias)."""
    if g is None:
        return torch.zeros_like(like)
    if g.shape != like.shape:
        g = g.reshape(like.shape)
    return g if g.dtype == like.dtype else g.to(like.dtype)


def _backward_op(
    dy: Tensor, x: Tensor, channel: str, w1: Optional[Tensor], b1: Optional[Tensor],
    w2: Optional[Tensor], b2: Optional[Tensor], spatial: str, sw: Optional[Tensor],
    sb: Optional[Tensor], bn_weight: Optional[Tensor], bn_bias: Optional[Tensor],
    bn_mean: Optional[Tensor], bn_var: Optional[Tensor], bn_eps: float, bn_train: bool,
    ca: Tensor, avg: Tensor, mx: Tensor, amp: Tensor, sa: Tensor, maps: Tensor, amc: Tensor,
    zc: Tensor, hid: Tensor, zs: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dx, dw1, db1, dw2, db2, dsw, dsb, dbn_weight, dbn_bias); absent weights get empty tensors."""
    dx, grads = _backward_body(
        dy, x, channel, w1, b1, w2, b2, spatial, sw, sb, bn_weight, bn_bias, bn_mean, bn_var, bn_eps, bn_train,
        ca, avg, mx, amp, sa, maps, amc, zc, hid, zs,
    )
    weights = (w1, b1, w2, b2, sw, sb, bn_weight, bn_bias)
    return (dx, *(x.new_empty(0) if t is None else _weight_grad(grads.get(k), t) for k, t in zip(_GRAD_KEYS, weights)))


_attention_bwd = torch.library.custom_op("attnfused::attention_backward", mutates_args=())(_backward_op)


@_attention_bwd.register_fake
def _(dy, x, channel, w1, b1, w2, b2, spatial, sw, sb, bn_weight, bn_bias, *rest):
    def like(t: Optional[Tensor]) -> Tensor:
        return x.new_empty(0) if t is None else torch.empty_like(t)

    return (empty_output(x), *(like(t) for t in (w1, b1, w2, b2, sw, sb, bn_weight, bn_bias)))


# Positions of the differentiable weights among the op's inputs, in the backward op's output order.
_WEIGHT_POS = (2, 3, 4, 5, 7, 8, 9, 10)


def _save(ctx, inputs, saved) -> None:
    """What backward reads: x, the weights, the running statistics in eval, ``saved`` (_SAVED but
    moments, in order)."""
    # Running statistics are only read in eval; in training the caller updates them in place after
    # this forward, so saving them would trip autograd's version check.
    bn_stats = (None, None) if inputs[14] else inputs[11:13]
    ctx.save_for_backward(inputs[0], *(inputs[i] for i in _WEIGHT_POS), *bn_stats, *saved)
    ctx.meta = (inputs[1], inputs[6], inputs[13], inputs[14])


def _setup_context(ctx, inputs, output) -> None:
    _save(ctx, inputs, output[1:-1])
    ctx.mark_non_differentiable(*output[1:])


def _backward_args(ctx, dy: Tensor) -> tuple[tuple, tuple]:
    """(the backward body's / op's arguments from what :func:`_save` kept, the weights in
    _GRAD_KEYS order)."""
    x, w1, b1, w2, b2, sw, sb, bn_w, bn_b, bn_mean, bn_var, *saved = ctx.saved_tensors
    channel, spatial, bn_eps, bn_train = ctx.meta
    args = (dy, x, channel, w1, b1, w2, b2, spatial, sw, sb, bn_w, bn_b, bn_mean, bn_var, bn_eps, bn_train, *saved)
    return args, (w1, b1, w2, b2, sw, sb, bn_w, bn_b)


def _input_grads(dx: Tensor, weight_grads) -> tuple[Optional[Tensor], ...]:
    """The gradients of the op's 15 inputs: ``dx``, the weights' (in _GRAD_KEYS order) at
    _WEIGHT_POS, None elsewhere."""
    result: list[Optional[Tensor]] = [dx] + [None] * 14
    for pos, g in zip(_WEIGHT_POS, weight_grads):
        result[pos] = g
    return tuple(result)


def _backward(ctx, dy, *_unused):
    """The custom op's autograd: one call of the backward op (opaque to torch.compile)."""
    args, weights = _backward_args(ctx, dy)
    grads = _attention_bwd(*args)
    return _input_grads(grads[0], (None if t is None else g for g, t in zip(grads[1:], weights)))


_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


class AttnfusedAttention(torch.autograd.Function):
    """The custom op's forward and backward bodies as a plain autograd node, for eager calls.

    Same bodies (``_forward_body``, ``_backward_body``), same gradients: what it skips is the
    custom-op machinery around them (dispatcher round trips, schema checks, the generated autograd
    wrapper), which on CPU cost ~150 us per call, more than a whole SE block at 7x7, and the op's
    fixed outputs: it returns ``(y, moments or None)``, saves None for absent stages' tensors and
    gives None for absent weights' gradients instead of empty placeholders. ``torch.compile`` keeps
    seeing the custom op (one opaque node per direction: :func:`attention` picks by
    ``torch.compiler.is_compiling()``).
    """

    @staticmethod
    def forward(ctx, *inputs):
        """``(y, moments or None)``; absent stages save None, not the op's empty placeholders."""
        y, small = _forward_body(inputs)
        _save(ctx, inputs, [small.get(k) for k in _SAVED[:-1]])
        moments = small.get("moments")
        if moments is not None:
            ctx.mark_non_differentiable(moments)
        return y, moments

    @staticmethod
    def backward(ctx, dy, *_unused):
        args, weights = _backward_args(ctx, dy)
        twice = torch.is_grad_enabled()  # create_graph=True: the gradients would be differentiated
        with torch.no_grad():
            dx, grads = _backward_body(*args)
        out = _input_grads(
            dx, (None if t is None else _weight_grad(grads.get(k), t) for k, t in zip(_GRAD_KEYS, weights))
        )
        # What the gradients depend on and could be differentiated with respect to: _NotTwice's
        # inputs, so that a second backward towards any of them reaches it.
        sources = [t for t in (dy, args[1], *weights) if t is not None and t.requires_grad] if twice else []
        return _NotTwice.apply(len(out), *out, *sources) if sources else out


_TWICE_MESSAGE = (
    "attnfused: a fused block's backward is not differentiable, so second derivatives through it "
    "(create_graph=True, e.g. a gradient penalty) are not available; run the block with "
    "attnfused.use_backend('reference') (the eager spec, fully differentiable) for that"
)


class _NotTwice(torch.autograd.Function):
    """Passes the fused backward's gradients through; differentiating them raises.

    The fused backward runs kernels with no derivative of their own: differentiated anyway, they
    gave zeros or partial second derivatives without a word. Like ``once_differentiable``, but with
    ``x`` and the weights as inputs too (``once_differentiable`` only sees ``dy``; the second
    derivative also depends on them), and with a message saying what to do instead.
    """

    @staticmethod
    def forward(ctx, n: int, *tensors):
        """The first ``n`` of ``tensors`` (the gradients); the rest are only graph edges."""
        return tuple(None if g is None else g.detach() for g in tensors[:n])  # same storage, not a view

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(_TWICE_MESSAGE)


def attention(
    x: Tensor,
    channel: Optional[ChannelSpec] = None, w1: Optional[Tensor] = None, b1: Optional[Tensor] = None,
    w2: Optional[Tensor] = None, b2: Optional[Tensor] = None,
    spatial: Optional[SpatialSpec] = None, sw: Optional[Tensor] = None, sb: Optional[Tensor] = None,
    bn_weight: Optional[Tensor] = None, bn_bias: Optional[Tensor] = None,
    bn_mean: Optional[Tensor] = None, bn_var: Optional[Tensor] = None,
    bn_eps: float = 1e-5, bn_train: bool = False,
) -> tuple[Tensor, Optional[Tensor]]:
    """Run the fused block (inputs already validated by :mod:`attnfused.functional`).

    Returns ``(y, moments)``: ``moments`` is ``[mean, biased var]`` of the spatial conv output
    when a BatchNorm used batch statistics (for the caller's running-statistics update), else None.
    """
    inputs = (
        x, channel.encode() if channel else "", w1, b1, w2, b2, spatial.encode() if spatial else "",
        sw, sb, bn_weight, bn_bias, bn_mean, bn_var, float(bn_eps), bool(bn_train),
    )
    uses_batch_stats = spatial is not None and spatial.norm and (bn_train or bn_mean is None)
    if torch.compiler.is_compiling() or (type(x) is not Tensor and is_fake(x)):
        # (a FakeTensor outside torch.compile, e.g. a FakeTensorMode shape / memory estimate: the
        # custom op's fake kernel answers, where the provider's kernels have no fake versions;
        # is_fake takes 1.5 us, the type test 0.03 and passes plain tensors)
        out = _attention_fwd(*inputs)
        return out[0], (out[-1] if uses_batch_stats else None)
    if not _needs_grad(x, w1, b1, w2, b2, sw, sb, bn_weight, bn_bias):
        # Inference: the forward body alone; no autograd node, nothing saved (~5 us less per call),
        # and no argmax for the channel max (CPU: ~0.1 ms less at 7x7, see csrc/cpu/reduce.cpp).
        y, small = _forward_body(inputs, for_backward=False)
        return y, (small.get("moments") if uses_batch_stats else None)
    out = AttnfusedAttention.apply(*inputs)
    return out[0], (out[-1] if uses_batch_stats else None)


def _needs_grad(*tensors: Optional[Tensor]) -> bool:
    """Whether autograd would record an op on ``tensors`` (grad mode on and one requires grad)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
