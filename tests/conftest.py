"""Test set-up: without a GPU, run the Triton kernels through the Triton interpreter.

TRITON_INTERPRET must be set before the kernel modules are imported (Triton decides at decoration
time), so it is set here, before any test imports attnfused.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
