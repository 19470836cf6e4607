"""The Triton kernels compile for the GPUs they are meant for, on a machine without one.

The interpreter (how the rest of the suite runs them on CPU) executes a kernel's Python, not
Triton's compiler: a construct the compiler rejects, a type it cannot lower, a layout ptxas
refuses all pass there and fail at the first launch on a GPU. So here every launch the blocks make
(each block of tests/helpers.py, every dtype, both layouts, odd and ResNet-50 shapes, forward and
backward, the reductions split as for a 132-SM GPU) is recorded as the JIT would specialise it
(argument types, constexprs, 16-divisible arguments, integers equal to 1 as constants), without
running it, and each distinct variant goes through Triton's whole pipeline down to a cubin for
sm_90 (the lent H200) and sm_80, in a subprocess without ``TRITON_INTERPRET`` (tests/triton_aot.py).
The launchers' alignment claims (attnfused/kernels/triton/_offsets.py) are checked both ways: true
on every row start, and visible in the PTX as vector loads of the claimed width.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import triton.language as tl

import attnfused
from helpers import BLOCKS, make_block

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU every launch compiles for real")

_PTR = {torch.float32: "fp32", torch.float64: "fp64", torch.float16: "fp16", torch.bfloat16: "bf16",
        torch.int32: "i32", torch.int64: "i64", torch.bool: "i1"}
SHAPES = [(1, 1, 1, 1), (2, 5, 3, 7), (3, 33, 9, 1), (2, 64, 14, 14), (32, 64, 7, 7),
          (2, 256, 56, 56), (2, 512, 28, 28), (2, 1024, 14, 14), (2, 2048, 7, 7), (32, 2048, 7, 7)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _variant(kernel, args, kwargs) -> dict:
    """What Triton's JIT specialises a launch of ``kernel`` on (triton/runtime/jit.py)."""
    sig, const, divisible = {}, {}, []
    for name, v in zip(kernel.arg_names, args):
        if isinstance(v, torch.Tensor):
            sig[name] = "*" + _PTR[v.dtype]
            if v.data_ptr() % 16 == 0:
                divisible.append(name)
        elif isinstance(v, bool):
            sig[name] = "i1"
        elif isinstance(v, int):
            if v == 1:
                const[name] = 1
                continue
            sig[name] = "i32" if -(2**31) <= v < 2**31 else "i64"
            if v % 16 == 0:
                divisible.append(name)
        elif isinstance(v, float):
            sig[name] = "fp32"
        else:
            raise TypeError(f"{kernel.__name__}: unexpected argument {name}={v!r}")
    for name, v in kwargs.items():
        const[name] = {"dtype": v.name} if isinstance(v, tl.dtype) else v
    return {"kernel": kernel.__name__, "signature": sig, "constexprs": const, "divisible": sorted(divisible)}


def _record_variants(monkeypatch) -> list[dict]:
    """Every distinct launch of the blocks' forward and backward on the Triton provider."""
    from attnfused.kernels import triton as tk

    seen: dict[str, dict] = {}

    def recorder(kernel):
        def run(*args, grid, warmup=False, **kwargs):
            rec = _variant(kernel, args, kwargs)
            seen[json.dumps(rec, sort_keys=True)] = rec
            for v in args:  # not run: zeros keep what follows valid (argmax indices in range)
                if isinstance(v, torch.Tensor):
                    v.zero_()

        return run

    for k in (tk.reduce_hw_kernel, tk.reduce_c_kernel, tk.pointwise_kernel, tk.pointwise_flat_kernel):
        monkeypatch.setattr(k, "run", recorder(k), raising=False)
    monkeypatch.setattr(tk.PROVIDER, "min_programs", 4 * 132)  # split as on an H100 / H200
    for block in BLOCKS:
        for b, c, h, w in SHAPES:
            for dtype in DTYPES:
                m = make_block(block, c, dtype)
                for fmt in (torch.contiguous_format, torch.channels_last):
                    x = torch.randn(b, c, h, w, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
                    with attnfused.use_backend("triton"):
                        m(x).backward(torch.ones_like(x))
    return list(seen.values())


def _representatives(variants: list[dict]) -> list[dict]:
    """One launch per (kernel, constexprs, pointer dtypes): the one with the most 16-divisible
    arguments (the most vectorised code): ~420 of the ~820 distinct launches, ~50 s per target.
    (All ~870 launches of the kernels before the alignment hints compiled for sm_90, in ~90 s.)"""
    best: dict[str, dict] = {}
    for rec in variants:
        key = json.dumps([rec["kernel"], {k: v for k, v in rec["constexprs"].items() if k.isupper()},
                          {k: v for k, v in rec["signature"].items() if v.startswith("*")}], sort_keys=True)
        if key not in best or len(rec["divisible"]) > len(best[key]["divisible"]):
            best[key] = rec
    return list(best.values())


# Shared memory a program may use: the opt-in per-block maximum of each architecture.
SHARED_LIMIT = {"cuda:90": 227 * 1024, "cuda:80": 163 * 1024}


def test_every_triton_launch_compiles_for_sm90_and_sm80(monkeypatch, tmp_path):
    recorded = _record_variants(monkeypatch)
    variants = _representatives(recorded)
    kernels = {v["kernel"] for v in variants}
    assert kernels == {"reduce_hw_kernel", "reduce_c_kernel", "pointwise_kernel", "pointwise_flat_kernel"}, kernels
    # every flag of every kernel seen both ways (a recorder that missed launches would not be)
    for name in kernels:
        flags = {k for v in variants if v["kernel"] == name for k, c in v["constexprs"].items() if isinstance(c, bool)}
        for flag in flags:
            values = {v["constexprs"].get(flag) for v in variants if v["kernel"] == name}
            assert {True, False} <= values, f"{name}.{flag} only seen as {values}"
    path = tmp_path / "variants.json"
    path.write_text(json.dumps(variants))
    # its own cache: every variant really compiles (Triton caches cubins in ~/.triton by default)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TRITON_CACHE_DIR": str(tmp_path / "cache")}
    script = os.path.join(os.path.dirname(__file__), "triton_aot.py")
    targets = ("cuda:90", "cuda:80")
    procs = {  # one process per target, side by side (CI machines have 2 cores)
        target: subprocess.Popen([sys.executable, script, str(path), target], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
        for target in targets
    }
    for target, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=1800)
        assert proc.returncode == 0, stderr[-4000:]
        result = json.loads(stdout.strip().splitlines()[-1])
        assert not result["failures"], f"{target}: {len(result['failures'])} variants fail: {result['failures'][:3]}"
        assert result["compiled"] == len(variants), result
        assert result["max_shared"] <= SHARED_LIMIT[target], result
        # an alignment the launcher claimed (_offsets.py) turns into vector loads of that width, and
        # the flat kernel's VEC into 16-byte ones
        for rec, widest in zip(variants, result["widest_load"]):
            const = rec["constexprs"]
            claim = const.get("ALIGN", const.get("VEC")) * _ELEM[rec["signature"]["A"]]
            if claim > _ELEM[rec["signature"]["A"]]:
                assert widest >= claim, f"{target}: {rec['kernel']} {const}: claims {claim} B, widest load {widest} B"


_ELEM = {"*fp32": 4, "*fp64": 8, "*fp16": 2, "*bf16": 2}


def _row_starts_aligned(t: torch.Tensor, strides: tuple[int, int, int], c_fast: bool, align: int) -> bool:
    """Brute force: every row of ``t``'s unit-stride axis starts ``align`` elements aligned."""
    b, c, h, w = t.shape
    sb, sc, sp = strides
    other, n_other = (sp, h * w) if c_fast else (sc, c)
    elem = t.element_size()
    return all((t.data_ptr() + (i * sb + j * other) * elem) % (align * elem) == 0 for i in range(b) for j in range(n_other))


def _layouts():
    """(tensor, c_fast, the ALIGN expected) over layouts the blocks meet and ones that defeat it."""
    base = torch.empty(2, 1024, 14, 14)
    yield base, False, 4  # NCHW 14x14 fp32: rows of 196 floats, 16-byte aligned
    yield base.bfloat16(), False, 4  # bf16: 392-byte rows, 8-byte aligned
    yield torch.empty(2, 64, 7, 7), False, 1  # rows of 49
    yield torch.empty(2, 64, 56, 56).half(), False, 8
    yield torch.empty(2, 200, 7, 7).contiguous(memory_format=torch.channels_last), True, 4
    yield torch.empty(2, 30, 5, 5).contiguous(memory_format=torch.channels_last), True, 2
    yield torch.empty(2, 64, 14, 14, dtype=torch.float64), False, 2
    yield torch.empty(2 * 64 * 196 + 1)[1:].view(2, 64, 14, 14), False, 1  # pointer 4 bytes off
    yield torch.empty(2 * 64 * 196 + 2)[2:].view(2, 64, 14, 14), False, 2
    yield torch.empty(2, 66, 14, 14)[:, 1:65], False, 4  # channel slice: rows of 196 floats, 784 B apart
    yield torch.empty(2, 64, 14, 14)[:, :, :, :7], False, 2  # W sliced: launched as a contiguous copy, rows of 98
    yield torch.empty(1, 1, 1, 1).expand(2, 64, 14, 14), False, 1  # stride 0 (dy of y.sum())
    yield torch.empty(2, 64, 14, 14).contiguous(memory_format=torch.channels_last), False, 1  # wrong axis


def test_vector_align_claims_only_what_holds():
    """The launcher's ALIGN (attnfused/kernels/triton/_offsets.py) against brute force on each row
    start: a false claim would make the GPU fault on a misaligned vector access, a missed one leave
    the 14x14 stage's loads scalar."""
    from attnfused.kernels._layout import bcp_strides
    from attnfused.kernels.triton._offsets import vector_align

    for t, c_fast, want in _layouts():
        t2, strides = bcp_strides(t)
        got = vector_align([(t2, strides)], c_fast)
        assert got == want, (tuple(t.shape), t.stride(), t.dtype, c_fast, got, want)
        if got > 1:
            unit, length = (strides[1], t.shape[1]) if c_fast else (strides[2], t.shape[2] * t.shape[3])
            assert unit == 1 and length % got == 0
            assert _row_starts_aligned(t2, strides, c_fast, got)
    # a launch takes the smallest of its tensors' alignments
    a, b = torch.empty(2, 64, 14, 14), torch.empty(2 * 64 * 196 + 2)[2:].view(2, 64, 14, 14)
    assert vector_align([(a, bcp_strides(a)[1]), (b, bcp_strides(b)[1])], False) == 2
