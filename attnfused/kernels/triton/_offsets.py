"""Offsets of a ``[BLOCK_C, BLOCK_P]`` tile of a full-size tensor, with the alignment hint that lets
Triton vectorise the unit-stride axis.

Triton's JIT flags an integer argument as divisible only when it is a multiple of 16. A row of
H*W = 196 (ResNet-50's 14x14 stage) or a channels_last pixel of C = 200 is not, so without more
the compiler cannot prove any row start 16-byte aligned and loads element by element (4-byte loads
in fp32, 2-byte in bf16; seen in the sm_90 PTX). The launcher (:func:`vector_align`) checks what
actually holds and passes it as ``ALIGN``: then the unit-stride axis has stride 1 in every
full-size tensor of the launch and a length that ``ALIGN`` divides, and every row start
(``b * stride_b`` plus the other axis' offset) is a multiple of ``ALIGN`` elements, as is each data
pointer. The row starts carry the claim as ``tl.multiple_of``, the unit axis' mask as
:func:`axis_mask` (a hint on the length itself, a scalar, does not reach the mask). A false hint
would make the GPU fault on a misaligned vector access, so :func:`vector_align` only claims what it
checked (tests/test_triton_compiles.py checks the claims by brute force, and that the PTX then
holds vector loads of the claimed width).
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor


def vector_align(tensors: list[tuple[Tensor, tuple[int, int, int]]], c_fast: bool) -> int:
    """The ``ALIGN`` (elements, a power of two, at most 16 bytes' worth) that holds for every
    ``(tensor, (stride_b, stride_c, stride_p))`` of one launch, the tile's unit-stride axis being C
    when ``c_fast`` else P: that axis has stride 1 and a length that ``ALIGN`` divides, the other
    strides and the data pointers are multiples of ``ALIGN`` elements. 1 when nothing holds."""
    elem = tensors[0][0].element_size()
    align = max(1, 16 // elem)
    for t, (sb, sc, sp) in tensors:
        _, c, h, w = t.shape
        unit, other, length = (sc, sp, c) if c_fast else (sp, sc, h * w)
        if unit != 1 or t.element_size() != elem:
            return 1
        while align > 1 and (length % align or sb % align or other % align or t.data_ptr() % (align * elem)):
            align //= 2
    return align


@triton.jit
def axis_mask(idx, n, ALIGN: tl.constexpr):
    """``idx < n``. With ``ALIGN > 1`` (``n`` then a multiple of it) written as ``idx // ALIGN <
    n // ALIGN``, the same values, but visibly constant over each ALIGN-element group: a mask
    that may change from one element to the next stops Triton from vectorising the masked
    access, and the JIT only tells it ``n``'s divisibility by 16."""
    if ALIGN > 1:
        m = (idx // ALIGN) < (n // ALIGN)
    else:
        m = idx < n
    return m


@triton.jit
def tile_offsets(b, c64, p64, sb, sc, sp, C_FAST: tl.constexpr, ALIGN: tl.constexpr):
    """``b * sb + c * sc + p * sp`` as a ``[BLOCK_C, BLOCK_P]`` tile; with ``ALIGN > 1`` the row
    starts carry the launcher's alignment claim (the unit-stride axis then has stride 1)."""
    if ALIGN > 1:
        if C_FAST:
            off = tl.multiple_of(b * sb + p64 * sp, ALIGN)[None, :] + c64[:, None]
        else:
            off = tl.multiple_of(b * sb + c64 * sc, ALIGN)[:, None] + p64[None, :]
    else:
        off = b * sb + c64[:, None] * sc + p64[None, :] * sp
    return off
