"""Build script for attnfused.

The Python package (Triton kernels, JIT-compiled at run time) always installs. On top of it,
``attnfused._C`` (the "cpu" and "cuda" kernel providers, ``csrc/``) is compiled with ninja through
``torch.utils.cpp_extension``:

- CUDA + CPU kernels when torch is a CUDA build and an nvcc of the same major version is found
  (``CUDA_HOME``/``CUDA_PATH``, else nvcc on PATH, following wrapper scripts such as
  /usr/local/bin/nvcc -> /usr/local/cuda-X/bin; attnfused/_toolchain.py);
  ``TORCH_CUDA_ARCH_LIST`` defaults to the visible GPUs, or to ``8.0;8.6;8.9;9.0+PTX`` without one;
- CPU kernels only when there is no usable CUDA toolkit (the line printed says why), or
  ``ATTNFUSED_NO_CUDA=1``;
- no extension (pure Python) with ``ATTNFUSED_NO_EXT=1``, or when torch or a C++ compiler is missing.

It prints which, in one line. Build without isolation so the extension links against the installed
torch: ``pip install --no-build-isolation -e .`` (DESIGN.md §7).
"""

import glob
import importlib.util
import os
import shutil
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;8.6;8.9;9.0+PTX"


def _say(msg: str) -> None:
    print(f"attnfused: {msg}", file=sys.stderr)


def _toolchain():
    """attnfused/_toolchain.py, loaded from the source tree (the package is not installed yet)."""
    spec = importlib.util.spec_from_file_location("_toolchain", os.path.join(HERE, "attnfused", "_toolchain.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sources(pattern: str) -> list[str]:
    """Every kernel file matching ``pattern`` (relative to the checkout), sorted: a new kernel file
    is built without editing this list, in the same order on every machine."""
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def _extension_plan():
    """(ext_modules, cmdclass, one-line summary)."""
    if os.environ.get("ATTNFUSED_NO_EXT") == "1":
        return [], {}, "pure-Python install (ATTNFUSED_NO_EXT=1): no compiled 'cpu'/'cuda' providers"
    try:
        import torch
    except ImportError:
        return [], {}, "pure-Python install (torch is not importable at build time; build with --no-build-isolation)"
    cxx = os.environ.get("CXX", "c++")
    if not shutil.which(cxx.split()[0]):
        return [], {}, f"pure-Python install (no C++ compiler: {cxx!r} not found)"

    cuda_home, reason = _toolchain().cuda_build_problem(torch.version.cuda)
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home  # read by cpp_extension at import
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCHS

    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    # The C++ standard is left to torch (its headers need C++20 since 2.13). No FMA contraction:
    # the CPU kernels round every product and sum as written, so that their results do not depend
    # on the machine; csrc/cpu/fc_gate.cpp's AVX-512 loops would otherwise fuse them (AVX-512F
    # brings FMA).
    cxx_flags = ["-O3", "-ffp-contract=off"]
    if torch.backends.openmp.is_available():
        # at::parallel_for is an inline `#pragma omp parallel` in OpenMP builds of torch: without
        # -fopenmp it silently runs on one thread. Compile-only flag: the GOMP symbols resolve
        # to the OpenMP runtime torch itself loads (linking our own would mix two runtimes).
        cxx_flags.append("-fopenmp")
    cpp = ["csrc/ops.cpp"] + _sources("csrc/cpu/*.cpp")
    cu = _sources("csrc/cuda/*.cu")
    if cuda_home:
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or "the visible GPUs"
        ext = CUDAExtension(
            "attnfused._C",
            cpp + cu,
            define_macros=[("ATTNFUSED_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
        )
        summary = f"building attnfused._C with CUDA + CPU kernels (nvcc in {cuda_home}, archs {archs})"
    else:
        ext = CppExtension("attnfused._C", cpp, extra_compile_args={"cxx": cxx_flags})
        summary = f"building attnfused._C with CPU kernels only ({reason})"
    # ninja keeps incremental rebuilds to the files that changed; MAX_JOBS bounds its parallelism.
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}, summary


ext_modules, cmdclass, summary = _extension_plan()
_say(summary)

setup(
    name="attnfused",
    version="0.1.0",
    description="SE, ECA and CBAM attention blocks as fused GPU kernels with one-pass autograd",
    packages=find_packages(include=["attnfused", "attnfused.*"]),
    python_requires=">=3.9",
    # numpy: the Triton interpreter (CPU runs of the Triton kernels) needs it.
    install_requires=["torch>=2.4", "numpy"],
    # torchvision: the end-to-end ResNet-50 benchmark (and its test).
    extras_require={"test": ["pytest>=7", "expecttest", "torchvision", "timm>=1.0"], "bench": ["matplotlib", "torchvision"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
