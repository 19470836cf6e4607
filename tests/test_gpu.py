"""GPU-only checks (skipped without CUDA): CUDA-graph capture, 64-bit offsets, realistic shapes."""

from __future__ import annotations

import pytest
import torch

import attnfused
from helpers import TOL, assert_close, assert_close_but_max_ties, make_block, make_input, max_tie_mask, run_fwd_bwd
from test_extension import FC_GATE_CASES, GATE_CONV_CASES, check_fc_gate, check_gate_conv, fc_gate_case_id, gate_conv_case_id

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("block", ["se_max", "cbam_fc"])
def test_cuda_graph_capture_forward_backward(block, provider):
    """No host synchronisation inside the block: forward + backward capture and replay."""
    m = make_block(block, 64, torch.float32)
    x = make_input((4, 64, 14, 14), torch.float32, "channels_last").requires_grad_(True)
    dy = make_input((4, 64, 14, 14), torch.float32, "nchw", seed=2)
    with attnfused.use_backend(provider):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm up: compile the kernels outside the capture
            for _ in range(2):
                x.grad = None
                m(x).backward(dy)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        x.grad = None
        with torch.cuda.graph(graph):
            y = m(x)
            y.backward(dy)
        x.data.copy_(make_input((4, 64, 14, 14), torch.float32, "channels_last", seed=5))
        graph.replay()
        torch.cuda.synchronize()
    y_ref, dx_ref, _ = run_fwd_bwd(m, x.detach(), "reference", dy)
    assert_close(y.detach(), y_ref, torch.float32, "replayed y")
    assert_close(x.grad, dx_ref, torch.float32, "replayed dx")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("block", ["se_avg", "eca", "cbam_fc", "cbam_conv"])
def test_resnet_stage_shapes_half(block, dtype, layout, provider):
    for c, hw in ((256, 56), (2048, 7)):
        m = make_block(block, c, dtype)
        x = make_input((8, c, hw, hw), dtype, layout)
        dy = make_input((8, c, hw, hw), dtype, "nchw", seed=2)
        y_ref, dx_ref, g_ref = run_fwd_bwd(m, x, "reference", dy)
        y, dx, g = run_fwd_bwd(m, x, provider, dy)
        assert_close(y, y_ref, dtype, "y")
        assert_close_but_max_ties(dx, dx_ref, dtype, "dx", max_tie_mask(m, x))


def test_64bit_offsets(provider):
    """More than 2**31 elements: the last sample must be right (int32 offsets would wrap)."""
    free, _ = torch.cuda.mem_get_info()
    shape = (3, 1024, 768, 1000)  # 2.36e9 elements, 4.7 GB in bf16
    if free < 4 * 2 * 3 * 1024 * 768 * 1000:
        pytest.skip("not enough GPU memory for a > 2**31-element tensor")
    m = make_block("cbam_fc", 1024, torch.bfloat16)
    x = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    with attnfused.use_backend(provider), torch.no_grad():
        y = m(x)
    with attnfused.use_backend("reference"), torch.no_grad():
        y_last = m(x[-1:])
    assert_close(y[-1:], y_last, torch.bfloat16, "last sample")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("block", ["se_max", "eca", "cbam_fc", "spatial7"])
def test_cuda_and_triton_agree_on_large_shapes(block, dtype, layout):
    """The two GPU providers against each other at batch 32 on ResNet-50 stage shapes, forward and
    backward (both accumulate in fp32; they differ only in summation order, which in fp16/bf16 can
    still round x * ca to another winner of a near-tie: max_tie_mask)."""
    for c, hw in ((256, 56), (1024, 14), (2048, 7)):
        m = make_block(block, c, dtype)
        x = make_input((32, c, hw, hw), dtype, layout)
        dy = make_input((32, c, hw, hw), dtype, "nchw", seed=2)
        y_t, dx_t, g_t = run_fwd_bwd(m, x, "triton", dy)
        y_c, dx_c, g_c = run_fwd_bwd(m, x, "cuda", dy)
        assert_close(y_c, y_t, dtype, f"y {c}x{hw}")
        assert_close_but_max_ties(dx_c, dx_t, dtype, f"dx {c}x{hw}", max_tie_mask(m, x))
        for n in g_t:
            scale = max(1.0, g_t[n].abs().max().item())
            rtol, atol = TOL[dtype]
            torch.testing.assert_close(g_c[n], g_t[n], rtol=rtol, atol=atol * scale, msg=lambda e: f"grad {n}: {e}")


def _needs_cuda_kernels():
    from attnfused.kernels.extension import extension_status

    if not extension_status()["cuda"]:
        pytest.skip("attnfused._C has no CUDA kernels")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", GATE_CONV_CASES, ids=gate_conv_case_id)
def test_cuda_gate_conv_matches_torch(case, dtype):
    """csrc/cuda/gate_conv.cu on the GPU against F.conv2d / convolution_backward, and the same bits
    twice (no atomics)."""
    _needs_cuda_kernels()
    runs = [check_gate_conv(torch.ops.attnfused_C, dtype, case, "cuda") for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs)), "the gate convolution is not deterministic"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", FC_GATE_CASES, ids=fc_gate_case_id)
def test_cuda_fc_gate_matches_autograd(case, dtype):
    """csrc/cuda/fc_gate.cu on the GPU against autograd through F.linear, and the same bits twice."""
    _needs_cuda_kernels()
    from attnfused.kernels.extension import CUDA

    if CUDA.fc_gate is None:
        pytest.skip("ATTNFUSED_CUDA_FC_GATE=0")
    runs = [check_fc_gate(CUDA, dtype, case, "cuda") for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs)), "the fc gate is not deterministic"
