"""The compiled extension attnfused._C: it was built (with CUDA kernels wherever nvcc is present),
and its ops refuse bad input with an error instead of reading out of bounds."""

from __future__ import annotations

import os

import pytest
import torch

from attnfused._toolchain import cuda_build_problem
from attnfused.kernels.extension import extension_status

ops = torch.ops.attnfused_C


def test_extension_is_built():
    if os.environ.get("ATTNFUSED_NO_EXT") == "1":
        pytest.skip("ATTNFUSED_NO_EXT=1: this install is pure Python by request")
    status = extension_status()
    assert status["built"], f"attnfused._C missing: {status['error']} (README: the test command builds it)"


def test_cuda_kernels_are_built_when_nvcc_is_present():
    """CI has nvcc but no GPU: this is what proves every change to csrc/cuda still compiles."""
    if os.environ.get("ATTNFUSED_NO_EXT") == "1":
        pytest.skip("ATTNFUSED_NO_EXT=1: this install is pure Python by request")
    home, why_not = cuda_build_problem(torch.version.cuda)
    if home is None:
        pytest.skip(f"the extension is CPU-only by design here: {why_not}")
    assert extension_status()["cuda"], f"nvcc in {home} matches torch's CUDA, but attnfused._C has no CUDA kernels"


def _x(*shape, dtype=torch.float32):
    return torch.randn(shape, dtype=dtype)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ops.reduce_hw(_x(2, 3, 4), None, None, None, None, None, False, 1.0), "4-D"),
        (lambda: ops.reduce_hw(_x(2, 3, 4, 4).int(), None, None, None, None, None, False, 1.0), "dtype"),
        (lambda: ops.reduce_hw(_x(2, 3, 4, 4), _x(2, 3, 4, 5), None, None, None, None, False, 1.0), "match"),
        (lambda: ops.reduce_hw(_x(2, 3, 4, 4), _x(2, 3, 4, 4), _x(2, 15), None, None, None, False, 1.0), "32 elements"),
        (lambda: ops.reduce_hw(_x(2, 3, 4, 4), _x(2, 3, 4, 4), _x(2, 16).double(), None, None, None, False, 1.0),
         "Float"),
        (lambda: ops.reduce_hw(_x(2, 3, 4, 4), _x(2, 3, 4, 4), None, None, _x(2, 16), None, False, 1.0), "together"),
        (lambda: ops.reduce_hw(_x(2, 3, 4, 4), _x(2, 3, 4, 4), None, None, None, None, True, 1.0), "max"),
        (lambda: ops.reduce_c(_x(2, 3, 4, 4), None, _x(3, 2).t(), True, 3.0), "contiguous"),
        (lambda: ops.pointwise(_x(2, 3, 4, 4), _x(2, 3, 4, 4), False, None, None, None, None, None, None,
                               _x(2, 3), None), "argmax"),
        (lambda: ops.pointwise(_x(2, 3, 4, 4), _x(2, 3, 4, 4).half(), True, _x(2, 3), None, None, None, None, None,
                               None, None), "like"),
    ],
    ids=["not-4d", "int-dtype", "x-shape", "small-numel", "small-dtype", "dm-without-amc", "max-of-dot",
         "non-contiguous", "dmax-without-amp", "like-dtype"],
)
def test_ops_refuse_bad_input(call, match):
    if not extension_status()["built"]:
        pytest.skip("attnfused._C not built (test_extension_is_built says why)")
    with pytest.raises(RuntimeError, match=match):
        call()
