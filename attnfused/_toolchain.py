"""Where the CUDA toolkit is, and whether the CUDA kernels can be built against this torch.

Used by ``setup.py`` (to decide what to compile) and by the tests (to know what should have been
compiled). Plain Python, no torch import at module level: setup.py loads it from the source tree.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from typing import Optional


# The nvcc flags csrc/cuda/*.cu get in the extension build (torch.utils.cpp_extension's for an
# extension, plus setup.py's), for compiling one of them alone the same way: tests/test_cuda_codegen.py
# (ptxas reports, PTX) and benchmarks/sass_loops.py (SASS).
NVCC_KERNEL_FLAGS = (
    "-std=c++20", "-O3", "-DATTNFUSED_WITH_CUDA", "--expt-relaxed-constexpr", "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
)


def _is_cuda_home(path: Optional[str]) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, "bin", "nvcc")) and os.path.isfile(
        os.path.join(path, "include", "cuda_runtime_api.h")
    )


def find_cuda_home() -> Optional[str]:
    """The CUDA toolkit root, or None. torch's own lookup takes dirname(dirname(which nvcc)), which
    is wrong when nvcc on PATH is a wrapper script (/usr/local/bin/nvcc -> answers /usr/local)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if _is_cuda_home(os.environ.get(var)):
            return os.environ[var]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        candidates.append(os.path.dirname(os.path.dirname(real)))
        try:
            with open(real, "rb") as f:
                head = f.read(4096)
            if head.startswith(b"#!"):  # a wrapper script: look for the nvcc it runs
                candidates += [m.decode() for m in re.findall(rb"(/[^\s\"']+)/bin/nvcc", head)]
        except OSError:
            pass
    candidates += sorted(glob.glob("/usr/local/cuda*"), reverse=True)
    return next((c for c in candidates if _is_cuda_home(c)), None)


def nvcc_version(cuda_home: str) -> Optional[str]:
    """``"13.0"`` from ``nvcc --version``, or None if it cannot be run."""
    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def cuda_build_problem(torch_cuda: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """``(cuda_home, None)`` when the CUDA kernels can be built for a torch built with CUDA
    ``torch_cuda`` (``torch.version.cuda``), else ``(None, reason)``."""
    if os.environ.get("ATTNFUSED_NO_CUDA") == "1":
        return None, "ATTNFUSED_NO_CUDA=1"
    if torch_cuda is None:
        return None, "torch is not a CUDA build"
    home = find_cuda_home()
    if home is None:
        return None, "no CUDA toolkit (nvcc) found"
    version = nvcc_version(home)
    if version is None:
        return None, f"{home}/bin/nvcc does not run"
    # cpp_extension refuses a different major version (the runtime ABI changes between majors).
    if version.split(".")[0] != torch_cuda.split(".")[0]:
        return None, f"nvcc {version} in {home} does not match torch's CUDA {torch_cuda} (major versions differ)"
    return home, None
