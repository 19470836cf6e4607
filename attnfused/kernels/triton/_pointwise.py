"""The one full-size write of each direction: ``scale`` (forward ``y``) and ``grad_input`` (``dx``).

Every term is optional (constexpr), so the same kernels serve SE/ECA, spatial attention and CBAM::

    forward   y  = round(x * ca) * sa                                   (CA_FIRST)
    backward  dx = (dy*sa + da[p] + dm[p]*[c == amc[p]]) * ca
                   + davg[c] + dmax[c]*[p == amp[c]]

Two kernels walk the elements; the terms are applied by one helper (:func:`apply_terms`):

- ``pointwise_kernel``: one program per (sample, channel tile, spatial tile), any strides. Its
  loads vectorise along the unit-stride axis when rows are aligned (_offsets.py);
- ``pointwise_flat_kernel``: ``a`` and ``y`` both dense NCHW whose rows of H*W cannot be aligned
  (7x7: 49 elements). It walks memory order in 16-byte vectors, decoding (b, c, p) once per vector
  (two 32-bit divisions) and stepping across at most one row end inside it, as
  csrc/cuda/pointwise.cu's vector kernel does; the 2-D tiles would load element by element there.
"""

import triton
import triton.language as tl

from ._offsets import axis_mask, tile_offsets


@triton.jit
def apply_terms(
    v, c, p, small_c, small_p, cmask, pmask, CA, SA, DA, DM, AMC, DAVG, DMAX, AMP, X_TY: tl.constexpr,
    HAS_CA: tl.constexpr, CA_FIRST: tl.constexpr, ROUND_X1: tl.constexpr, HAS_SA: tl.constexpr,
    HAS_DA: tl.constexpr, HAS_DM: tl.constexpr, HAS_DAVG: tl.constexpr, HAS_DMAX: tl.constexpr,
):
    """``v`` (the accumulation dtype) with the terms applied. ``c`` / ``p`` / ``small_c`` (b*C + c) /
    ``small_p`` (b*P + p) and the masks broadcast against ``v``: a tile passes ``[BLOCK_C, 1]`` and
    ``[1, BLOCK_P]`` (one load per row / column), the flat kernel per-element ``[NV, VEC]``."""
    if HAS_CA:
        ca = tl.load(CA + small_c, mask=cmask, other=0.0)
        if CA_FIRST:
            v = v * ca
            if ROUND_X1:  # eager materialises x1 = x * ca in the input dtype
                v = v.to(X_TY).to(ca.dtype)
    if HAS_SA:
        v = v * tl.load(SA + small_p, mask=pmask, other=0.0)
    v = axis_terms(v, c, small_p, pmask, DA, DM, AMC, HAS_DA, HAS_DM)  # the spatial gate's, per p
    if HAS_CA:
        if not CA_FIRST:
            v = v * ca
    return axis_terms(v, p, small_c, cmask, DAVG, DMAX, AMP, HAS_DAVG, HAS_DMAX)  # the channel gate's, per c


@triton.jit
def axis_terms(v, other, small, mask, D, DM, ARG, HAS_D: tl.constexpr, HAS_DM: tl.constexpr):
    """``v + d[small] + dm[small] * [other == arg[small]]``: a pooled statistic's gradient, the
    mean's spread over the whole row and the max's to its argmax (each term if present)."""
    if HAS_D:
        v = v + tl.load(D + small, mask=mask, other=0.0)
    if HAS_DM:
        dm = tl.load(DM + small, mask=mask, other=0.0)
        arg = tl.load(ARG + small, mask=mask, other=-1)
        v = v + tl.where(other == arg, dm, 0.0)
    return v


@triton.jit
def pointwise_kernel(
    A, Y, CA, SA, DA, DM, AMC, DAVG, DMAX, AMP,
    C, P, n_ctiles, n_ptiles,
    sab, sac, sap, syb, syc, syp,
    HAS_CA: tl.constexpr, CA_FIRST: tl.constexpr, ROUND_X1: tl.constexpr, HAS_SA: tl.constexpr,
    HAS_DA: tl.constexpr, HAS_DM: tl.constexpr, HAS_DAVG: tl.constexpr, HAS_DMAX: tl.constexpr,
    ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    C_FAST: tl.constexpr, ALIGN: tl.constexpr,  # row alignment the launcher checked (_offsets.py)
):
    pid = tl.program_id(0)
    tiles = n_ctiles * n_ptiles
    b = (pid // tiles).to(tl.int64)
    r = pid % tiles
    c = (r // n_ptiles) * BLOCK_C + tl.arange(0, BLOCK_C)
    p = (r % n_ptiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    cmask = axis_mask(c, C, ALIGN if C_FAST else 1)
    pmask = axis_mask(p, P, 1 if C_FAST else ALIGN)
    c64 = c.to(tl.int64)
    p64 = p.to(tl.int64)
    mask = cmask[:, None] & pmask[None, :]
    acc_ty = ACC
    small_c = b * C + c64
    small_p = b * P + p64

    v = tl.load(A + tile_offsets(b, c64, p64, sab, sac, sap, C_FAST, ALIGN), mask=mask, other=0.0).to(acc_ty)
    v = apply_terms(
        v, c[:, None], p[None, :], small_c[:, None], small_p[None, :], cmask[:, None], pmask[None, :],
        CA, SA, DA, DM, AMC, DAVG, DMAX, AMP, A.dtype.element_ty,
        HAS_CA, CA_FIRST, ROUND_X1, HAS_SA, HAS_DA, HAS_DM, HAS_DAVG, HAS_DMAX,
    )
    tl.store(Y + tile_offsets(b, c64, p64, syb, syc, syp, C_FAST, ALIGN), v.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def pointwise_flat_kernel(
    A, Y, CA, SA, DA, DM, AMC, DAVG, DMAX, AMP,
    C, P, total,
    HAS_CA: tl.constexpr, CA_FIRST: tl.constexpr, ROUND_X1: tl.constexpr, HAS_SA: tl.constexpr,
    HAS_DA: tl.constexpr, HAS_DM: tl.constexpr, HAS_DAVG: tl.constexpr, HAS_DMAX: tl.constexpr,
    ACC: tl.constexpr, BLOCK: tl.constexpr, VEC: tl.constexpr,
):
    """``a`` and ``y`` dense NCHW, 16-byte aligned, ``total`` = B*C*P < 2^31 elements, a multiple of
    ``VEC`` (16 bytes of elements), and ``P >= VEC`` (the launcher checks)."""
    NV: tl.constexpr = BLOCK // VEC
    i0 = tl.program_id(0) * BLOCK + tl.arange(0, NV) * VEC  # vector starts (32-bit: total < 2^31)
    r0 = i0 // P  # the (b, c) row of each vector's first element: the two divisions per vector
    b0 = r0 // C
    e = tl.arange(0, VEC)
    l = (i0 - r0 * P)[:, None] + e[None, :]
    wrap = l >= P  # past the row's end: the next row (VEC <= P: at most one end per vector)
    p = tl.where(wrap, l - P, l)
    c = (r0 - b0 * C)[:, None] + wrap.to(tl.int32)
    wrap_c = c >= C  # past the sample's last row: the next sample's first
    c = tl.where(wrap_c, 0, c)
    b = b0[:, None] + wrap_c.to(tl.int32)
    i = tl.multiple_of(i0, VEC)[:, None] + e[None, :]
    m = (i // VEC) < (total // VEC)  # constant over each vector (total % VEC == 0), so it vectorises
    v = tl.load(A + i, mask=m, other=0.0).to(ACC)
    v = apply_terms(
        v, c, p, b.to(tl.int64) * C + c, b.to(tl.int64) * P + p, m, m,
        CA, SA, DA, DM, AMC, DAVG, DMAX, AMP, A.dtype.element_ty,
        HAS_CA, CA_FIRST, ROUND_X1, HAS_SA, HAS_DA, HAS_DM, HAS_DAVG, HAS_DMAX,
    )
    tl.store(Y + i, v.to(Y.dtype.element_ty), mask=m)
