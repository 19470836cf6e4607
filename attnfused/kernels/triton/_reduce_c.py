"""Reductions over the channel axis C, one program per (sample, spatial tile, C split): ``pool_c``, ``dot_c``.

Partial results per split are combined by the launcher, as in ``_reduce_hw.py``.

``pool_c`` builds CBAM's spatial maps from ``x1 = x * ca`` on the fly (rounded to the input dtype
first, as eager materialises ``x1`` in that dtype: the max and its argmax then match eager's bit for
bit), so ``x1`` is never written. ``dot_c`` is ``sum_C dy * x * ca``, the spatial-gate gradient.
"""

import triton
import triton.language as tl

from ._max import merge_max_argmax, tile_max_argmax
from ._offsets import axis_mask, tile_offsets


@triton.jit
def reduce_c_kernel(
    A, X, CA,  # A: x (pool) or dy (dot); X: x (dot only); CA: [B, C]
    OUT_SUM, OUT_MAX, OUT_ARG,  # [B, P]
    C, P, n_ptiles, n_split, SPLIT_LEN, DIVISOR,
    sab, sac, sap, sxb, sxc, sxp,
    HAS_X: tl.constexpr, HAS_CA: tl.constexpr, ROUND_X1: tl.constexpr,
    WANT_MAX: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    C_FAST: tl.constexpr, ALIGN: tl.constexpr,  # row alignment the launcher checked (_offsets.py)
):
    pid = tl.program_id(0)
    split = pid % n_split
    pid = pid // n_split
    b = (pid // n_ptiles).to(tl.int64)
    p = (pid % n_ptiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = axis_mask(p, P, 1 if C_FAST else ALIGN)
    p64 = p.to(tl.int64)
    acc_ty = OUT_SUM.dtype.element_ty

    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=acc_ty)
    run_m = tl.full([BLOCK_P], float("-inf"), acc_ty)
    run_i = tl.zeros([BLOCK_P], dtype=tl.int32)
    c_begin = split * SPLIT_LEN
    for c0 in range(c_begin, tl.minimum(c_begin + SPLIT_LEN, C), BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = axis_mask(c, C, ALIGN if C_FAST else 1)
        c64 = c.to(tl.int64)
        mask = cmask[:, None] & pmask[None, :]
        v = tl.load(A + tile_offsets(b, c64, p64, sab, sac, sap, C_FAST, ALIGN), mask=mask, other=0.0).to(acc_ty)
        if HAS_CA:
            v = v * tl.load(CA + b * C + c64, mask=cmask, other=0.0)[:, None]
            if ROUND_X1:
                v = v.to(A.dtype.element_ty).to(acc_ty)
        if HAS_X:
            xv = tl.load(X + tile_offsets(b, c64, p64, sxb, sxc, sxp, C_FAST, ALIGN), mask=mask, other=0.0)
            v = v * xv.to(acc_ty)
        acc += tl.where(mask, v, 0.0)
        if WANT_MAX:
            m, i = tile_max_argmax(v, c[:, None] + tl.zeros([BLOCK_C, BLOCK_P], tl.int32), mask, 0)
            run_m, run_i = merge_max_argmax(run_m, run_i, m, i)

    out = (b * n_split + split) * P + p64  # partials [B, n_split, P]
    tl.store(OUT_SUM + out, tl.sum(acc, axis=0) / DIVISOR, mask=pmask)
    if WANT_MAX:
        tl.store(OUT_MAX + out, run_m, mask=pmask)
        tl.store(OUT_ARG + out, run_i, mask=pmask)
