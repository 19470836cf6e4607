"""What nvcc makes of csrc/cuda for the GPUs it targets, checked without a GPU.

The emulator (tests/cuemu) proves the kernels' logic, not their code: a register spill (local
memory traffic inside a kernel that should only stream x) or a vector path that lost its 16-byte
accesses would pass every test and show only in a profile. Here each ``csrc/cuda/*.cu`` is compiled
as setup.py compiles it (same flags as torch's extension build), for sm_90 (the lent H200) and
sm_80: ptxas's report must show no kernel outside fp64 (for gradcheck, not speed) spilling more
than 16 bytes or with a larger stack frame (local arrays indexed at run time live there), and the
PTX of every vector kernel must hold 16-byte global loads and stores.
Why 16 bytes and not 0: SASS makes 64-bit integer and IEEE fp32 division slow paths subroutine
calls, and ptxas spills a few registers around such a call depending on the arch (seen: 4-12 bytes
in a tile reduction, on sm_80 for its 64-bit block-index division before that became 32-bit, on
sm_90 around the mean's division in the epilogue); spills in a streaming loop run to 100s of bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from attnfused._toolchain import NVCC_KERNEL_FLAGS, cuda_build_problem

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))


def _nvcc() -> str:
    home, why_not = cuda_build_problem(torch.version.cuda)
    if home is None:
        pytest.skip(f"no nvcc matching torch's CUDA: {why_not}")
    return os.path.join(home, "bin", "nvcc")


def _demangle(names: list[str]) -> list[str]:
    if not shutil.which("c++filt"):
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def _compile_all(arch: str, tmp: Path, what: str) -> dict[str, str]:
    """{source name: ptxas report (``what="cubin"``) or PTX text (``"ptx"``)}, compiled side by side."""
    nvcc = _nvcc()
    procs = {}
    for src in SOURCES:
        out = tmp / f"{src.stem}.{arch}.{what}"
        cmd = [nvcc, *NVCC_KERNEL_FLAGS, f"-arch={arch}", f"-{what}", "-o", str(out), str(src)]
        if what == "cubin":
            cmd[1:1] = ["-Xptxas", "-v"]
        procs[src.name] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), out)
    result = {}
    for name, (proc, out) in procs.items():
        log, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{name}: {log[-3000:]}"
        result[name] = log if what == "cubin" else out.read_text()
    return result


_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_cuda_kernels_do_not_spill(arch, tmp_path):
    spills, kernels, small = [], 0, []
    for name, log in _compile_all(arch, tmp_path, "cubin").items():
        entries = _ENTRY.findall(log)
        counts = _SPILL.findall(log)
        assert entries and len(entries) == len(counts), f"{name}: unexpected ptxas report\n{log[-2000:]}"
        kernels += len(entries)
        for kernel, (frame, stores, loads) in zip(_demangle(entries), counts):
            line = f"{kernel}: {frame} B stack frame, {stores} B spill stores, {loads} B spill loads"
            # a stack frame beyond the call's also holds local arrays indexed at run time
            if "double" not in kernel and max(int(frame), int(stores), int(loads)) > 16:
                spills.append(line)
            elif int(stores) or int(loads):
                small.append(line)
    assert kernels >= 40, kernels  # every template instance reported (the report format held)
    assert not spills, "\n".join(spills + ["(tolerated:)"] + small)


def test_cuda_vector_kernels_move_16_bytes_per_access(tmp_path):
    if not shutil.which("c++filt"):
        pytest.skip("c++filt (binutils) is needed to read the kernels' template arguments")
    ptx = _compile_all("sm_90", tmp_path, "ptx")["pointwise.cu"]
    bodies = re.split(r"\n\.(?:visible )?\.?entry ", ptx)[1:]
    names = _demangle([b.split("(")[0].strip() for b in bodies])
    vector = [(n, b) for n, b in zip(names, bodies) if "pointwise_vector_kernel" in n]
    assert len(vector) == 16, [n for n, _ in vector]  # 4 dtypes x 2 index widths x 2 layouts
    for name, body in vector:
        scalar = name.split("pointwise_vector_kernel<")[1].split(",")[0]
        wide = {"double": ".v2.f64", "float": ".v4.f32"}.get(scalar, ".v4.u32")  # halves move as u32 words
        assert re.search(r"ld\.global(?:\.nc)?" + re.escape(wide), body), f"{name}: no 16-byte load"
        assert re.search(r"st\.global" + re.escape(wide), body), f"{name}: no 16-byte store"


def test_sass_loop_counter_reads_cuobjdump_output():
    """benchmarks/sass_loops.py (a dev tool: no cuobjdump here) on a hand-written cuobjdump excerpt:
    it finds the backward branch's loop, counts its instructions and FMAs, skips straight code."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sass_loops", ROOT / "benchmarks" / "sass_loops.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    sass = """
        Function : _Z4testPf
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E R2, desc[UR4][R4.64] ;
        /*0020*/                   FFMA R3, R2, R2, R3 ;
        /*0030*/               @P0 FFMA R5, R2, R3, R5 ;
        /*0040*/                   ISETP.NE.AND P0, PT, R6, RZ, PT ;
        /*0050*/               @P0 BRA 0x10 ;
        /*0060*/                   FFMA R7, R2, R2, R7 ;
        /*0070*/                   EXIT ;
"""
    found = tool.loops(sass, min_fma=2)
    assert list(found) == ["_Z4testPf"]
    (n, fma, ops), = found["_Z4testPf"]
    assert (n, fma, ops["LDG"], ops["BRA"]) == (5, 2, 1, 1)
    assert tool.loops(sass, min_fma=3) == {"_Z4testPf": []}
