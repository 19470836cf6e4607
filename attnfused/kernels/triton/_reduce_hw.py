"""Reductions over the spatial axis P, one program per (sample, channel tile, P split): ``pool_hw``, ``dot_hw``.

Each program streams its ``[BLOCK_C, SPLIT_LEN]`` slab once and writes one partial result; with
more than one split (too few (sample, channel tile) programs to fill the GPU) the launcher combines
the ``[B, n_split, C]`` partials in split order, so the result stays deterministic.

In the ``dot`` form it folds CBAM's "mid" gradient ``m = dy*sa + da + dm*[c == amc]`` into the
same pass, so ``dca = sum_P m * x`` costs one read of ``dy`` and ``x`` and ``m`` never exists in
memory.
"""

import triton
import triton.language as tl

from ._max import merge_max_argmax, tile_max_argmax
from ._offsets import axis_mask, tile_offsets


@triton.jit
def reduce_hw_kernel(
    A, X, SA, DA, DM, AMC,  # A: x (pool) or dy (dot); X: x (dot only); SA..AMC: [B, P] terms of m
    OUT_SUM, OUT_MAX, OUT_ARG,  # [B, C]
    C, P, n_ctiles, n_split, SPLIT_LEN, DIVISOR,
    sab, sac, sap, sxb, sxc, sxp,
    HAS_X: tl.constexpr, HAS_SA: tl.constexpr, HAS_DA: tl.constexpr, HAS_DM: tl.constexpr,
    WANT_MAX: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    C_FAST: tl.constexpr, ALIGN: tl.constexpr,  # row alignment the launcher checked (_offsets.py)
):
    pid = tl.program_id(0)
    split = pid % n_split
    pid = pid // n_split
    b = (pid // n_ctiles).to(tl.int64)  # 64-bit: b * stride can pass 2**31
    c = (pid % n_ctiles) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = axis_mask(c, C, ALIGN if C_FAST else 1)
    c64 = c.to(tl.int64)
    acc_ty = OUT_SUM.dtype.element_ty

    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=acc_ty)
    run_m = tl.full([BLOCK_C], float("-inf"), acc_ty)
    run_i = tl.zeros([BLOCK_C], dtype=tl.int32)
    p_begin = split * SPLIT_LEN
    for p0 in range(p_begin, tl.minimum(p_begin + SPLIT_LEN, P), BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = axis_mask(p, P, 1 if C_FAST else ALIGN)
        p64 = p.to(tl.int64)
        mask = cmask[:, None] & pmask[None, :]
        a_off = tile_offsets(b, c64, p64, sab, sac, sap, C_FAST, ALIGN)
        v = tl.load(A + a_off, mask=mask, other=0.0).to(acc_ty)
        if HAS_X:
            small = b * P + p64
            if HAS_SA:
                v = v * tl.load(SA + small, mask=pmask, other=0.0)[None, :]
            if HAS_DA:
                v = v + tl.load(DA + small, mask=pmask, other=0.0)[None, :]
            if HAS_DM:
                dm = tl.load(DM + small, mask=pmask, other=0.0)
                amc = tl.load(AMC + small, mask=pmask, other=-1)
                v = v + tl.where(c[:, None] == amc[None, :], dm[None, :], 0.0)
            xv = tl.load(X + tile_offsets(b, c64, p64, sxb, sxc, sxp, C_FAST, ALIGN), mask=mask, other=0.0)
            v = v * xv.to(acc_ty)
        acc += tl.where(mask, v, 0.0)
        if WANT_MAX:
            m, i = tile_max_argmax(v, p[None, :] + tl.zeros([BLOCK_C, BLOCK_P], tl.int32), mask, 1)
            run_m, run_i = merge_max_argmax(run_m, run_i, m, i)

    out = (b * n_split + split) * C + c64  # partials [B, n_split, C]
    tl.store(OUT_SUM + out, tl.sum(acc, axis=1) / DIVISOR, mask=cmask)
    if WANT_MAX:
        tl.store(OUT_MAX + out, run_m, mask=cmask)
        tl.store(OUT_ARG + out, run_i, mask=cmask)
