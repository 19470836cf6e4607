"""Viewing a 4-D tensor as ``[B, C, P]`` (``P = H*W``) without copying it."""

from __future__ import annotations

import torch
from torch import Tensor


def bcp_strides(t: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
    """``(t', (stride_b, stride_c, stride_p))`` with ``t'`` viewable as ``[B, C, H*W]``.

    NCHW-contiguous, channels_last, expanded (stride 0, e.g. the gradient of ``y.sum()``) and
    batch/channel slices all merge H and W into one strided axis, so ``t' is t``. Any other layout
    (e.g. a transposed H/W) gets one documented ``.contiguous()`` copy.
    """
    _, _, h, w = t.shape
    sb, sc, sh, sw = t.stride()
    if w == 1:
        return t, (sb, sc, sh)
    if h == 1 or sh == w * sw:
        return t, (sb, sc, sw)
    t = t.contiguous()
    return t, bcp_strides(t)[1]


def channels_fastest(strides: tuple[int, int, int]) -> bool:
    """True for channels_last-like tensors: the channel axis is the unit-stride one."""
    return strides[1] < strides[2]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation / small-tensor dtype: fp64 for fp64 inputs, fp32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def empty_output(like: Tensor) -> Tensor:
    """Uninitialised full-size output: ``like``'s layout where it maps to ``[B, C, P]``, else NCHW.

    Used by the kernels and by the ops' fake implementations, so both agree on output strides.
    """
    if bcp_strides(like)[0] is like:
        return torch.empty_like(like, memory_format=torch.preserve_format)
    return torch.empty(like.shape, dtype=like.dtype, device=like.device)
