"""Test set-up: without a GPU, run the Triton kernels through the Triton interpreter and the CUDA
kernels through the emulator (tests/cuemu, registered as the backend "cuemu").

TRITON_INTERPRET must be set before the kernel modules are imported (Triton decides at decoration
time), so it is set here, before any test imports attnfused.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


import pytest  # noqa: E402

from helpers import FUSED  # noqa: E402

if not torch.cuda.is_available():
    import cuemu  # noqa: E402,F401  (registers the "cuemu" provider; built on first use)


@pytest.fixture(params=FUSED)
def provider(request) -> str:
    """Each fused provider under test on this machine (tests/helpers.py: FUSED)."""
    return request.param
