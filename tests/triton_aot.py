"""Compile recorded launches of the Triton kernels for a GPU target, without a GPU.

Run by tests/test_triton_compiles.py in a subprocess without ``TRITON_INTERPRET`` (so that
``@triton.jit`` gives real JIT functions)::

    python tests/triton_aot.py VARIANTS.json cuda:90

``VARIANTS.json``: a list of ``{"kernel", "signature", "constexprs", "divisible"}`` records (what
the JIT would specialise a launch on: argument types, constexpr values, the arguments divisible by
16). Each is compiled through Triton's full pipeline (TTIR, TTGIR, LLVM, PTX, cubin by ptxas) for
the target, as the first launch on such a GPU would. Prints one JSON line: ``{"compiled": n,
"max_shared": bytes, "widest_load": [bytes per variant], "failures": [[kernel, constexprs, error],
...]}``.
"""

from __future__ import annotations

import json
import os
import re
import sys

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from attnfused.kernels.triton import _pointwise, _reduce_c, _reduce_hw  # noqa: E402

KERNELS = {
    k.__name__: k
    for k in (_pointwise.pointwise_kernel, _pointwise.pointwise_flat_kernel, _reduce_c.reduce_c_kernel,
              _reduce_hw.reduce_hw_kernel)
}
_DTYPES = {"fp32": tl.float32, "fp64": tl.float64}


def _constexpr(value):
    """A recorded constexpr: dtypes travel as {"dtype": name}."""
    return _DTYPES[value["dtype"]] if isinstance(value, dict) else value


_VECTOR_LOAD = re.compile(r"ld\.global(?:\.[a-z]+)*\.v([248])\.b(16|32|64)")


def widest_load(ptx: str) -> int:
    """Bytes of the widest vector load from global memory in ``ptx`` (0: none)."""
    return max((int(n) * int(bits) // 8 for n, bits in _VECTOR_LOAD.findall(ptx)), default=0)


def compile_variant(rec: dict, target: GPUTarget) -> tuple[int, int, int]:
    """(bytes of the cubin ``rec`` compiles to, bytes of shared memory it needs per program, bytes
    of its widest global vector load)."""
    kernel = KERNELS[rec["kernel"]]
    constexprs = {k: _constexpr(v) for k, v in rec["constexprs"].items()}
    signature = dict(rec["signature"])
    for k in constexprs:
        signature[k] = "constexpr"
    attrs = {(kernel.arg_names.index(k),): [["tt.divisibility", 16]] for k in rec["divisible"]}
    compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target)
    return len(compiled.asm["cubin"]), compiled.metadata.shared, widest_load(compiled.asm["ptx"])


def main() -> None:
    path, target_text = sys.argv[1], sys.argv[2]
    backend, arch = target_text.split(":")
    target = GPUTarget(backend, int(arch), 32)
    with open(path) as f:
        variants = json.load(f)
    failures, compiled, shared, widest = [], 0, 0, []
    for rec in variants:
        try:
            size, smem, load = compile_variant(rec, target)
        except Exception as e:  # the compiler's message, for the test's report
            failures.append([rec["kernel"], rec["constexprs"], f"{type(e).__name__}: {e}"[-2000:]])
            widest.append(None)
            continue
        compiled += size > 0
        shared = max(shared, smem)
        widest.append(load)
    print(json.dumps({"compiled": compiled, "max_shared": shared, "widest_load": widest, "failures": failures}))


if __name__ == "__main__":
    main()
