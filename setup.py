"""Build script for attnfused.

This version is pure Python (Triton kernels are JIT-compiled at run time). The compiled extension
``attnfused._C`` (CUDA C++ and CPU providers from ``csrc/``) hooks in here later; until then the
"cuda" and "cpu" backends report themselves unavailable.
"""

from setuptools import find_packages, setup

print("attnfused: pure-Python install (Triton kernels; no compiled extension in this version)")

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
)
