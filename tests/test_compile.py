"""torch.compile(fullgraph=True): the fused blocks trace without graph breaks, forward and backward."""

from __future__ import annotations

import pytest
import torch

import attnfused
from helpers import assert_close, make_block, make_input, run_fwd_bwd

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("block", ["se_max", "eca", "cbam_fc", "spatial3"])
def test_compile_fullgraph_forward_backward(block, provider):
    torch._dynamo.reset()
    m = make_block(block, 6, torch.float32)
    x = make_input((2, 6, 5, 7), torch.float32, "channels_last")
    dy = make_input((2, 6, 5, 7), torch.float32, "nchw", seed=2)
    y_ref, dx_ref, g_ref = run_fwd_bwd(m, x, "reference", dy)
    compiled = torch.compile(m, fullgraph=True)  # raises on any graph break
    with attnfused.use_backend(provider):
        xc = x.detach().clone().requires_grad_(True)
        y = compiled(xc)
        y.backward(dy)
        # The block must be the fused op inside the compiled graph, not a reference fallback.
        assert "CompiledFunction" in type(y.grad_fn).__name__
    assert_close(y.detach(), y_ref, torch.float32, "y")
    assert_close(xc.grad, dx_ref, torch.float32, "dx")
    for n, p in m.named_parameters():
        assert_close(p.grad, g_ref[n], torch.float32, n)


def test_compile_dynamic_shapes(provider):
    """dynamic=True: one graph takes batches and maps of other sizes (the ops' fake kernels give
    symbolic shapes), with outputs and gradients as the reference's."""
    torch._dynamo.reset()
    m = make_block("cbam_fc", 6, torch.float32)
    compiled = torch.compile(m, fullgraph=True, dynamic=True)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with attnfused.use_backend(provider):
        for shape in ((2, 6, 5, 7), (3, 6, 4, 9)):
            x = make_input(shape, torch.float32, "nchw")
            dy = make_input(shape, torch.float32, "nchw", seed=2)
            y_ref, dx_ref, g_ref = run_fwd_bwd(m, x, "reference", dy)
            m.zero_grad()
            xc = x.detach().clone().requires_grad_(True)
            y = compiled(xc)
            y.backward(dy)
            assert_close(y.detach(), y_ref, torch.float32, "y")
            assert_close(xc.grad, dx_ref, torch.float32, "dx")
            for n, p in m.named_parameters():
                assert_close(p.grad, g_ref[n], torch.float32, n)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs + 1  # no recompile


def test_compiled_graph_calls_the_fused_op(provider):
    """The traced forward holds attnfused::attention and no eager pooling."""
    torch._dynamo.reset()
    m = make_block("cbam_conv", 6, torch.float32)
    x = make_input((2, 6, 5, 7), torch.float32, "nchw")
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    with attnfused.use_backend(provider):
        torch.compile(m, backend=capture, fullgraph=True)(x)
    code = graphs[0].code
    assert "attnfused.attention" in code
    assert "adaptive" not in code and "max_pool" not in code


def test_compile_family_member_with_batchnorm_in_training(provider):
    """A timm-style CBAM (biases, (mean, max) maps, spatial BatchNorm in training) through
    FusedAttention: one graph, running statistics updated as in eager."""
    import copy

    from torch import nn

    from attnfused import ChannelSpec, FusedAttention, SpatialSpec

    torch._dynamo.reset()
    torch.manual_seed(0)
    holder = nn.Module()
    holder.fc1, holder.fc2 = nn.Conv2d(6, 3, 1), nn.Conv2d(3, 6, 1)
    holder.conv, holder.bn = nn.Conv2d(2, 1, 7, padding=3, bias=False), nn.BatchNorm2d(1)
    spec = dict(
        channel=ChannelSpec(pool="avgmax"), channel_params=dict(w1="fc1.weight", b1="fc1.bias", w2="fc2.weight", b2="fc2.bias"),
        spatial=SpatialSpec(maps="mean_max", norm=True), spatial_params=dict(weight="conv.weight", bn="bn"),
    )
    eager = FusedAttention(copy.deepcopy(holder), **spec, backend="reference").train()
    fused = FusedAttention(copy.deepcopy(holder), **spec).train()
    compiled = torch.compile(fused, fullgraph=True)
    x = make_input((2, 6, 5, 7), torch.float32, "channels_last")
    xe, xc = x.detach().clone().requires_grad_(True), x.detach().clone().requires_grad_(True)
    ye = eager(xe)
    with attnfused.use_backend(provider):
        yc = compiled(xc)
        yc.sum().backward()
    ye.sum().backward()
    assert_close(yc.detach(), ye.detach(), torch.float32, "y")
    assert_close(xc.grad, xe.grad, torch.float32, "dx")
    for (n, pe), pc in zip(eager.named_parameters(), fused.parameters()):
        assert_close(pc.grad, pe.grad, torch.float32, n)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(fused.bn, name), getattr(eager.bn, name), msg=name)


def test_torch_export_with_dynamic_shapes(provider):
    """torch.export: the block exports as the one custom op, with batch and map sizes symbolic, and
    the exported program runs other sizes as the module does."""
    m = make_block("cbam_fc", 6, torch.float32).eval()
    x = make_input((2, 6, 5, 7), torch.float32, "nchw")
    dims = {0: torch.export.Dim("b"), 2: torch.export.Dim("h"), 3: torch.export.Dim("w")}
    with attnfused.use_backend(provider):
        program = torch.export.export(m, (x,), dynamic_shapes=(dims,))
        ops = [n.target for n in program.graph.nodes if n.op == "call_function"]
        assert torch.ops.attnfused.attention.default in ops
        for shape in ((2, 6, 5, 7), (3, 6, 4, 9)):
            x = make_input(shape, torch.float32, "nchw")
            assert_close(program.module()(x), m(x), torch.float32, f"y at {shape}")


@pytest.mark.parametrize("block", ["se_max", "cbam_fc"])
def test_fake_tensor_mode_outside_compile(block, provider):
    """An eager call under FakeTensorMode (shape / memory estimates, as torch.compile's tracing
    does it) runs the custom op's fake kernel: the providers' own ops have no fake versions."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    m = make_block(block, 6, torch.float32)
    with attnfused.use_backend(provider), FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.randn(2, 6, 5, 7).to(memory_format=torch.channels_last).requires_grad_(True)
        y = m(x)
        y.sum().backward()
    assert y.shape == x.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert x.grad.shape == x.shape
    for p in m.parameters():
        assert p.grad is not None and p.grad.shape == p.shape
