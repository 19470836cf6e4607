"""The one full-size write of each direction: ``scale`` (forward ``y``) and ``grad_input`` (``dx``).

One program per (sample, channel tile, spatial tile); every term is optional (constexpr), so the
same kernel serves SE/ECA, spatial attention and CBAM::

    forward   y  = round(x * ca) * sa                                   (CA_FIRST)
    backward  dx = (dy*sa + da[p] + dm[p]*[c == amc[p]]) * ca
                   + davg[c] + dmax[c]*[p == amp[c]]
"""

import triton
import triton.language as tl

from ._offsets import axis_mask, tile_offsets


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
    if HAS_CA:
        ca = tl.load(CA + small_c, mask=cmask, other=0.0)[:, None]
        if CA_FIRST:
            v = v * ca
            if ROUND_X1:  # eager materialises x1 = x * ca in the input dtype
                v = v.to(A.dtype.element_ty).to(acc_ty)
    if HAS_SA:
        v = v * tl.load(SA + small_p, mask=pmask, other=0.0)[None, :]
    if HAS_DA:
        v = v + tl.load(DA + small_p, mask=pmask, other=0.0)[None, :]
    if HAS_DM:
        dm = tl.load(DM + small_p, mask=pmask, other=0.0)
        amc = tl.load(AMC + small_p, mask=pmask, other=-1)
        v = v + tl.where(c[:, None] == amc[None, :], dm[None, :], 0.0)
    if HAS_CA:
        if not CA_FIRST:
            v = v * ca
    if HAS_DAVG:
        v = v + tl.load(DAVG + small_c, mask=cmask, other=0.0)[:, None]
    if HAS_DMAX:
        dmax = tl.load(DMAX + small_c, mask=cmask, other=0.0)
        amp = tl.load(AMP + small_c, mask=cmask, other=-1)
        v = v + tl.where(p[None, :] == amp[:, None], dmax[:, None], 0.0)
    tl.store(Y + tile_offsets(b, c64, p64, syb, syc, syp, C_FAST, ALIGN), v.to(Y.dtype.element_ty), mask=mask)
