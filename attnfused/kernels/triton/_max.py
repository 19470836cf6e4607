"""Max with first-index argmax and eager-compatible NaN semantics, shared by the reductions."""

import triton
import triton.language as tl


@triton.jit
def tile_max_argmax(v, idx, valid, AXIS: tl.constexpr):
    """Max of ``v`` along ``AXIS`` and the first index (from ``idx``) where it occurs.

    Masked-off lanes (``valid`` False) never win. A NaN anywhere makes the max NaN and the
    argmax the first NaN, as eager max pooling propagates NaN.
    """
    isnan = v != v
    any_nan = tl.max(isnan.to(tl.int32), axis=AXIS) > 0
    m = tl.max(tl.where(isnan | (~valid), float("-inf"), v), axis=AXIS)
    target = tl.where(tl.expand_dims(any_nan, AXIS), isnan, v == tl.expand_dims(m, AXIS)) & valid
    i = tl.min(tl.where(target, idx, 2147483647), axis=AXIS)
    m = tl.where(any_nan, float("nan"), m)
    return m, i


@triton.jit
def merge_max_argmax(run_m, run_i, m, i):
    """Fold a later tile's (max, argmax) into the running one; ties keep the earlier index."""
    better = (m > run_m) | ((m != m) & (run_m == run_m))
    return tl.where(better, m, run_m), tl.where(better, i, run_i)
