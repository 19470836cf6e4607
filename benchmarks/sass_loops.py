"""Where a CUDA kernel's loop instructions go, from its SASS, without a GPU.

Compiles ``csrc/cuda/<name>.cu`` as the build does (nvcc, sm_90 by default), disassembles it with
``cuobjdump -sass`` and prints, per kernel, every loop (a backward branch) with at least
``--min-fma`` FFMA/DFMA: its instruction count, the count per FMA and its largest opcode groups.
That is how csrc/cuda/fc_gate.cu's tiles were sized before a GPU could time them (its header
quotes the numbers). Static counts only: a loop's trip count and latency are not here.

cuobjdump is not part of every CUDA install (not of the dev machines'): it comes with the full
toolkit, or from PyPI (``pip download --no-deps nvidia-cuda-cuobjdump``; the wheel's
``nvidia/cu13/bin/cuobjdump``). Pass ``--cuobjdump PATH`` or put it on PATH.

Usage: ``python benchmarks/sass_loops.py fc_gate [--arch sm_90] [--kernel NAME_PART] [--cuobjdump PATH]``
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def loops(sass: str, min_fma: int) -> dict[str, list[tuple[int, int, collections.Counter]]]:
    """{kernel: [(instructions, FMAs, opcode counts) per loop]} of cuobjdump's SASS text."""
    out = {}
    for func in re.split(r"\n\s*Function : ", sass)[1:]:
        name = func.split("\n", 1)[0].strip()
        ins = [(int(a, 16), i.strip()) for a, i in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", func)]
        at = {a: k for k, (a, _) in enumerate(ins)}
        found = []
        for k, (addr, text) in enumerate(ins):
            target = re.search(r"BRA.*?0x([0-9a-f]+)", text)
            if not target or int(target.group(1), 16) >= addr or int(target.group(1), 16) not in at:
                continue
            ops = collections.Counter(t.split()[1 if t.startswith("@") else 0].split(".")[0] for _, t in ins[at[int(target.group(1), 16)]:k + 1])
            fma = ops["FFMA"] + ops["DFMA"]
            if fma >= min_fma:
                found.append((sum(ops.values()), fma, ops))
        out[name] = found
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="a csrc/cuda file's stem, e.g. fc_gate")
    p.add_argument("--arch", default="sm_90")
    p.add_argument("--kernel", default="", help="only kernels whose mangled name contains this")
    p.add_argument("--min-fma", type=int, default=8)
    p.add_argument("--cuobjdump", default=shutil.which("cuobjdump"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    from attnfused._toolchain import NVCC_KERNEL_FLAGS, cuda_build_problem

    home, why_not = cuda_build_problem(torch.version.cuda)
    if home is None:
        print(f"sass_loops: no nvcc: {why_not}", file=sys.stderr)
        return 2
    if not args.cuobjdump or not os.path.exists(args.cuobjdump):
        print("sass_loops: no cuobjdump (see this script's docstring for where to get it)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        subprocess.run([os.path.join(home, "bin", "nvcc"), *NVCC_KERNEL_FLAGS, f"-arch={args.arch}", "-cubin", "-o", cubin,
                        str(ROOT / "csrc" / "cuda" / f"{args.source}.cu")], check=True)
        sass = subprocess.run([args.cuobjdump, "-sass", cubin], check=True, capture_output=True, text=True).stdout
    for name, found in loops(sass, args.min_fma).items():
        if args.kernel not in name or not found:
            continue
        print(name)
        for n, fma, ops in found:
            top = ", ".join(f"{op} {c}" for op, c in ops.most_common(6))
            print(f"    loop: {n} instructions, {fma} FMA ({n / fma:.2f} per FMA): {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
