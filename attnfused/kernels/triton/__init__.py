"""Triton provider: launchers for the passes in :mod:`attnfused.kernels` (semantics and traffic there).

Kernels: ``_reduce_hw.py`` (pool_hw, dot_hw), ``_reduce_c.py`` (pool_c, dot_c), ``_pointwise.py``
(scale, grad_input). On CPU tensors they run in the Triton interpreter, which Triton enables at
decoration time: ``TRITON_INTERPRET=1`` must be set before this module is first imported (attnfused
imports it lazily, on the first fused call).
"""

from __future__ import annotations

import contextlib
import os
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.interpreter import InterpretedFunction

from .._layout import acc_dtype, bcp_strides, channels_fastest, empty_output
from ._offsets import vector_align
from ._pointwise import pointwise_flat_kernel, pointwise_kernel
from ._reduce_c import reduce_c_kernel
from ._reduce_hw import reduce_hw_kernel

__all__ = ["PROVIDER", "TritonProvider"]

# Triton decides at decoration time whether a kernel is compiled or interpreted.
INTERPRETED = isinstance(reduce_hw_kernel, InterpretedFunction)


def _p2(n: int, cap: int) -> int:
    return min(triton.next_power_of_2(max(n, 1)), cap)


_TILE_ELEMS = 1024  # elements per tile: 8 per thread at 4 warps


def _tile(c: int, p: int, c_fast: bool, reduce_axis: str) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P): the unit-stride axis gets the long side so loads coalesce; when that
    axis is short (few channels, or a 7x7 / 1x1 map) the other side grows to keep ~1024 elements,
    instead of launching many near-empty programs."""
    if c_fast:
        bc = _p2(c, 64)
        return bc, _p2(p, max(16 if reduce_axis != "c" else 32, _TILE_ELEMS // bc))
    bp = _p2(p, 256 if reduce_axis != "c" else 128)
    return _p2(c, max(4 if reduce_axis != "c" else 8, _TILE_ELEMS // bp)), bp


def _alignment(tensors: list[tuple[Tensor, tuple[int, int, int]]], c_fast: bool) -> dict:
    """The ``C_FAST`` / ``ALIGN`` constexprs of a launch (_offsets.py). Without an alignment to
    claim, ``C_FAST`` is left False: it only matters with one, and one value keeps the JIT from
    compiling a second, identical variant."""
    align = vector_align(tensors, c_fast)
    return {"C_FAST": c_fast and align > 1, "ALIGN": align}


_FLAT_BLOCK = 1024  # elements per program of the flat pointwise kernel, as a 2-D tile's
# ATTNFUSED_TRITON_FLAT=0 (read at import) keeps the tiled pointwise kernel everywhere, to time the
# two against each other (benchmarks/gpu_all.sh, step triton_tiled).
_FLAT = os.environ.get("ATTNFUSED_TRITON_FLAT") != "0"


def _flat_ok(a: Tensor, out: Tensor, p: int, vec: int) -> bool:
    """Whether ``pointwise_flat_kernel`` takes this launch (its docstring's conditions): both
    tensors dense NCHW and 16-byte aligned, whole vectors only, rows at least a vector long, and
    32-bit element indices."""
    n = out.numel()
    return _FLAT and (
        a.is_contiguous() and out.is_contiguous() and a.data_ptr() % 16 == 0 and out.data_ptr() % 16 == 0
        and n % vec == 0 and p >= vec and n < 2**31 - _FLAT_BLOCK
    )


def _device_ctx(t: Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _small(t: Optional[Tensor], fallback: Tensor) -> Tensor:
    # Unused pointer arguments still need a tensor; constexpr flags keep them unread.
    return fallback if t is None else t


def _reduce_outputs(a: Tensor, n_split: int, n: int, want_max: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(sum, max, argmax) partials ``[B, n_split, n]``; without ``want_max`` the last two alias
    ``sum`` (never read)."""
    acc = acc_dtype(a.dtype)
    shape = (a.shape[0], n_split, n)
    out_sum = torch.empty(shape, dtype=acc, device=a.device)
    if not want_max:
        return out_sum, out_sum, out_sum
    return out_sum, torch.empty_like(out_sum), torch.empty(shape, dtype=torch.int32, device=a.device)


def _combine(parts: tuple[Tensor, Tensor, Tensor], divisor: int, want_max: bool):
    """Fold the split partials in split order: sums add up; the max takes the first split holding
    it (torch.max's first-index rule), so ties still go to the first index. One split: as is."""
    out_sum, out_max, out_arg = parts
    if out_sum.shape[1] == 1:
        return out_sum.squeeze(1), out_max.squeeze(1), out_arg.squeeze(1)
    total = out_sum.sum(1) / divisor
    if not want_max:
        return total, total, total
    mx, which = out_max.max(1)
    return total, mx, out_arg.gather(1, which.unsqueeze(1)).squeeze(1)


_SM_COUNT: dict[int, int] = {}


def _split(programs: int, loop_len: int, block: int, min_programs: int) -> tuple[int, int]:
    """(n_split, SPLIT_LEN): split the reduction loop when ``programs`` alone cannot reach
    ``min_programs`` (e.g. channels_last with few channel tiles, or CBAM's C-reduction at 7x7)."""
    n_blocks = triton.cdiv(loop_len, block)
    if programs >= min_programs or n_blocks < 2:
        return 1, n_blocks * block
    per = triton.cdiv(n_blocks, min(triton.cdiv(min_programs, programs), n_blocks))
    return triton.cdiv(n_blocks, per), per * block


class TritonProvider:
    """Kernel provider backed by Triton (compiled on CUDA, interpreted on CPU)."""

    name = "triton"
    # Reductions split their loop until they launch this many programs. None: 4 per SM on a GPU
    # (enough resident CTAs to keep HBM busy), 1 (never split) in the interpreter. Tests set it.
    min_programs: Optional[int] = None

    def _min_programs(self, device: torch.device) -> int:
        if self.min_programs is not None:
            return self.min_programs
        if device.type != "cuda":
            return 1
        idx = device.index if device.index is not None else torch.cuda.current_device()
        if idx not in _SM_COUNT:
            _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
        return 4 * _SM_COUNT[idx]

    def check_device(self, device: torch.device) -> None:
        if device.type == "cuda":
            return
        if device.type == "cpu" and INTERPRETED:
            return
        if device.type == "cpu":
            raise RuntimeError(
                "attnfused backend 'triton' got CPU tensors: Triton kernels run on CUDA tensors, or on "
                "CPU through the Triton interpreter when TRITON_INTERPRET=1 is set before attnfused's "
                "first fused call. Use backend 'auto' or 'reference' for CPU tensors."
            )
        raise RuntimeError(f"attnfused backend 'triton' does not support {device.type} tensors")

    # -- reductions over P ------------------------------------------------------------------
    def _reduce_hw(self, a: Tensor, x: Optional[Tensor], want_max: bool, divisor: int, **terms):
        bsz, c, h, w = a.shape
        p = h * w
        a, sa_ = bcp_strides(a)
        x, sx_ = bcp_strides(x) if x is not None else (a, sa_)
        c_fast = channels_fastest(sa_)
        bc, bp = _tile(c, p, c_fast, "p")
        n_ct = triton.cdiv(c, bc)
        n_split, split_len = _split(bsz * n_ct, p, bp, self._min_programs(a.device))
        parts = _reduce_outputs(a, n_split, c, want_max)
        if a.numel() == 0:
            return _combine(parts, divisor, want_max)
        out_sum, out_max, out_arg = parts
        sa, da, dm, amc = (terms.get(k) for k in ("sa", "da", "dm", "amc"))
        with _device_ctx(a):
            reduce_hw_kernel[(bsz * n_ct * n_split,)](
                a, x, _small(sa, out_sum), _small(da, out_sum), _small(dm, out_sum), _small(amc, out_sum),
                out_sum, out_max, out_arg,
                c, p, n_ct, n_split, split_len, divisor if n_split == 1 else 1, *sa_, *sx_,
                HAS_X=terms.get("has_x", False), HAS_SA=sa is not None, HAS_DA=da is not None,
                HAS_DM=dm is not None, WANT_MAX=want_max, BLOCK_C=bc, BLOCK_P=bp,
                **_alignment([(a, sa_), (x, sx_)], c_fast),
            )
        return _combine(parts, divisor, want_max)

    def pool_hw(
        self, x: Tensor, want_max: bool, want_arg: bool = True
    ) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        # want_arg is ignored: on a GPU the argmax rides along with the max at no extra traffic.
        h, w = x.shape[2:]
        avg, mx, arg = self._reduce_hw(x, None, want_max, h * w)
        return (avg, mx, arg) if want_max else (avg, None, None)

    def dot_hw(self, dy, x, sa=None, da=None, dm=None, amc=None) -> Tensor:
        return self._reduce_hw(dy, x, False, 1, has_x=True, sa=sa, da=da, dm=dm, amc=amc)[0]

    # -- reductions over C ------------------------------------------------------------------
    def _reduce_c(self, a: Tensor, x: Optional[Tensor], ca: Optional[Tensor], want_max: bool, divisor: int):
        bsz, c, h, w = a.shape
        p = h * w
        has_x = x is not None
        a, sa_ = bcp_strides(a)
        x, sx_ = bcp_strides(x) if x is not None else (a, sa_)
        c_fast = channels_fastest(sa_)
        bc, bp = _tile(c, p, c_fast, "c")
        n_pt = triton.cdiv(p, bp)
        n_split, split_len = _split(bsz * n_pt, c, bc, self._min_programs(a.device))
        parts = _reduce_outputs(a, n_split, p, want_max)
        if a.numel() == 0:
            return _combine(parts, divisor, want_max)
        out_sum, out_max, out_arg = parts
        with _device_ctx(a):
            reduce_c_kernel[(bsz * n_pt * n_split,)](
                a, x, _small(ca, out_sum), out_sum, out_max, out_arg,
                c, p, n_pt, n_split, split_len, divisor if n_split == 1 else 1, *sa_, *sx_,
                HAS_X=has_x, HAS_CA=ca is not None,
                ROUND_X1=ca is not None and not has_x and a.dtype != out_sum.dtype,
                WANT_MAX=want_max, BLOCK_C=bc, BLOCK_P=bp, **_alignment([(a, sa_), (x, sx_)], c_fast),
            )
        return _combine(parts, divisor, want_max)

    def pool_c(self, x: Tensor, ca: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        mean, mx, arg = self._reduce_c(x, None, ca, True, x.shape[1])
        return mx, mean, arg

    def dot_c(self, dy: Tensor, x: Tensor, ca: Optional[Tensor]) -> Tensor:
        return self._reduce_c(dy, x, ca, False, 1)[0]

    # -- full-size writes --------------------------------------------------------------------
    def _pointwise(self, a: Tensor, like: Tensor, ca_first: bool, **terms) -> Tensor:
        # The output takes the layout of ``like`` (x), whatever the layout of ``a`` (x or dy).
        out = empty_output(like)
        if out.numel() == 0:
            return out
        bsz, c, h, w = a.shape
        p = h * w
        a, sa_ = bcp_strides(a)
        so_ = bcp_strides(out)[1]
        c_fast = channels_fastest(so_)
        bc, bp = _tile(c, p, c_fast, "none")
        n_ct, n_pt = triton.cdiv(c, bc), triton.cdiv(p, bp)
        names = ("ca", "sa", "da", "dm", "amc", "davg", "dmax", "amp")
        t = {k: terms.get(k) for k in names}
        fill = next(v for v in t.values() if v is not None)
        flags = dict(
            HAS_CA=t["ca"] is not None, CA_FIRST=ca_first,
            ROUND_X1=ca_first and t["sa"] is not None and a.dtype not in (torch.float32, torch.float64),
            HAS_SA=t["sa"] is not None, HAS_DA=t["da"] is not None, HAS_DM=t["dm"] is not None,
            HAS_DAVG=t["davg"] is not None, HAS_DMAX=t["dmax"] is not None,
            ACC=tl.float64 if fill.dtype == torch.float64 else tl.float32,
        )
        small = [_small(t[k], fill) for k in names]
        align = _alignment([(a, sa_), (out, so_)], c_fast)
        vec = 16 // a.element_size()
        with _device_ctx(a):
            if align["ALIGN"] < vec and _flat_ok(a, out, p, vec):
                pointwise_flat_kernel[(triton.cdiv(out.numel(), _FLAT_BLOCK),)](
                    a, out, *small, c, p, out.numel(), **flags, BLOCK=_FLAT_BLOCK, VEC=vec,
                )
            else:
                pointwise_kernel[(bsz * n_ct * n_pt,)](
                    a, out, *small, c, p, n_ct, n_pt, *sa_, *so_, **flags, BLOCK_C=bc, BLOCK_P=bp, **align,
                )
        return out

    def scale(self, x: Tensor, ca: Optional[Tensor], sa: Optional[Tensor]) -> Tensor:
        return self._pointwise(x, x, True, ca=ca, sa=sa)

    def grad_input(self, dy, like, ca=None, sa=None, da=None, dm=None, amc=None, davg=None, dmax=None, amp=None):
        return self._pointwise(
            dy, like, False, ca=ca, sa=sa, da=da, dm=dm, amc=amc, davg=davg, dmax=dmax, amp=amp
        )


PROVIDER = TritonProvider()
