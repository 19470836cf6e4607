"""Test set-up: without a GPU, run the Triton kernels through the Triton interpreter.

TRITON_INTERPRET must be set before the kernel modules are imported (Triton decides at decoration
time), so it is set here, before any test imports attnfused.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


import pytest  # noqa: E402


@pytest.fixture(params=["triton", "cuda" if torch.cuda.is_available() else "cpu"])
def provider(request) -> str:
    """Each fused provider under test on this machine (tests/helpers.py: FUSED)."""
    return request.param
