"""Fused blocks vs the eager reference: forward and every gradient, odd shapes, both layouts, dtypes."""

from __future__ import annotations

import pytest
import torch

import attnfused
from helpers import BLOCKS, DEVICE, FUSED_DTYPES, LAYOUTS, TOL, assert_close, make_block, make_input, run_fwd_bwd

# Odd shapes: C=1, H=W=1, C above the channels_last tile (64), H*W above the NCHW tile (256) and
# not a multiple of any block, batch 1 and 3.
SHAPES = [
    (1, 1, 1, 1),
    (3, 1, 5, 7),
    (2, 3, 1, 1),
    (3, 5, 7, 9),
    (1, 70, 3, 5),
    (1, 4, 17, 19),
]


def _assert_fused_matches_reference(m, x, dy, dtype, provider):
    """Forward, dx and every parameter gradient (same dtype too) agree; returns the fused (y, dx).

    In fp16/bf16 the parameter gradients are compared relative to their largest entry: they are
    sums over B*H*W products, which eager accumulates in that precision (errors of ~1% of the
    largest entry) and the kernels in fp32. y and dx keep the elementwise tolerance; the kernels
    round ``x1 = x * ca`` to the input dtype as eager does, so CBAM's channel argmax (and where its
    gradient goes) matches eager's, ties included.
    """
    y, dx, g = run_fwd_bwd(m, x, provider, dy)
    y_ref, dx_ref, g_ref = run_fwd_bwd(m, x, "reference", dy)
    assert_close(y, y_ref, dtype, "y")
    assert_close(dx, dx_ref, dtype, "dx")
    half = dtype in (torch.float16, torch.bfloat16)
    for name in g_ref:
        assert g[name].dtype == g_ref[name].dtype
        scale = g_ref[name].abs().max().item() if half and g_ref[name].numel() else 1.0
        rtol, atol = TOL[dtype]
        torch.testing.assert_close(
            g[name], g_ref[name], rtol=rtol, atol=atol * max(1.0, scale), msg=lambda e: f"grad of {name}: {e}"
        )
    return y, dx


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("provider,dtype", FUSED_DTYPES, ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("block", list(BLOCKS))
def test_matches_reference(block, shape, provider, dtype, layout):
    m = make_block(block, shape[1], dtype)
    x = make_input(shape, dtype, layout)
    dy = make_input(shape, dtype, "nchw", seed=2)
    y, dx = _assert_fused_matches_reference(m, x, dy, dtype, provider)
    assert y.dtype == dtype and dx.dtype == dtype
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt), "output must keep the input's layout"
    assert dx.is_contiguous(memory_format=fmt), "dx must keep the input's layout"


@pytest.mark.parametrize("block", ["se_max", "cbam_fc"])
def test_odd_strides_and_expanded_grad(block, provider):
    """A transposed H/W view (one documented copy) and the stride-0 gradient of ``y.sum()``."""
    m = make_block(block, 6, torch.float64)
    base = make_input((2, 6, 5, 4), torch.float64, "nchw")
    x = base.transpose(2, 3)  # [2, 6, 4, 5], H and W not mergeable into one strided axis
    for backend in ("reference", provider):
        xi = x.detach().clone().requires_grad_(True) if backend == "reference" else x.detach().requires_grad_(True)
        m.zero_grad()
        with attnfused.use_backend(backend):
            y = m(xi)
            y.sum().backward()
        if backend == "reference":
            y_ref, dx_ref = y.detach(), xi.grad
            g_ref = {n: p.grad.clone() for n, p in m.named_parameters()}
    assert_close(y.detach(), y_ref, torch.float64, "y")
    assert_close(xi.grad, dx_ref, torch.float64, "dx")
    for n, p in m.named_parameters():
        assert_close(p.grad, g_ref[n], torch.float64, n)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_mixed_layouts_of_x_and_dy(layout, provider):
    """dy in the other layout than x is read natively; dx follows x."""
    m = make_block("cbam_conv", 6, torch.float64)
    x = make_input((2, 6, 5, 3), torch.float64, layout)
    other = "nchw" if layout == "channels_last" else "channels_last"
    dy = make_input((2, 6, 5, 3), torch.float64, other, seed=3)
    _assert_fused_matches_reference(m, x, dy, torch.float64, provider)


@pytest.mark.parametrize("block", ["se_max", "ca_fc", "spatial3", "cbam_fc"])
def test_max_ties_go_to_first_index(block, provider):
    """Ties in max pooling send the whole gradient to the first maximal element, as eager does."""
    m = make_block(block, 4, torch.float64)
    x = torch.zeros(2, 4, 3, 5, dtype=torch.float64, device=DEVICE)
    x[:, :, 1:, :] = 1.0  # every channel has 10 tied maxima; every pixel ties across channels
    dy = make_input((2, 4, 3, 5), torch.float64, "nchw", seed=3)
    _assert_fused_matches_reference(m, x, dy, torch.float64, provider)


@pytest.mark.parametrize("block", ["se_avg", "se_max", "spatial3", "cbam_fc"])
def test_nan_propagates_like_eager(block, provider):
    m = make_block(block, 4, torch.float32)
    x = make_input((2, 4, 3, 5), torch.float32, "nchw")
    x[0, 1, 2, 3] = float("nan")
    with attnfused.use_backend("reference"):
        y_ref = m(x)
    with attnfused.use_backend(provider):
        y = m(x)
    assert torch.equal(torch.isnan(y), torch.isnan(y_ref))
    assert_close(y.nan_to_num(0.0), y_ref.nan_to_num(0.0), torch.float32, "y")


@pytest.mark.parametrize("block", ["se_max", "eca", "cbam_conv", "spatial7"])
def test_empty_batch(block, provider):
    m = make_block(block, 5, torch.float32)
    x = torch.zeros(0, 5, 4, 4, device=DEVICE, requires_grad=True)
    with attnfused.use_backend(provider):
        y = m(x)
        y.sum().backward()
    assert y.shape == x.shape
    assert x.grad.shape == x.shape
    for p in m.parameters():
        assert p.grad is not None and torch.all(p.grad == 0)


def test_empty_batch_with_spatial_batchnorm_in_training(provider):
    """As nn.BatchNorm2d: an empty batch in training gives an empty output and leaves the running
    statistics alone (one value, B*H*W = 1, is refused by both)."""
    from attnfused import functional as AF
    from attnfused.spec import ChannelSpec, SpatialSpec

    w1, w2 = make_input((2, 5), torch.float32, "nchw", seed=1), make_input((5, 2), torch.float32, "nchw", seed=2)
    sw = make_input((1, 2, 3, 3), torch.float32, "nchw", seed=3)
    params = [t.requires_grad_(True) for t in (w1, w2, sw)]
    for backend in ("reference", provider):
        mean, var = torch.full((1,), 0.5, device=DEVICE), torch.full((1,), 2.0, device=DEVICE)
        x = torch.zeros(0, 5, 4, 4, device=DEVICE, requires_grad=True)
        with attnfused.use_backend(backend):
            y = AF.attention(x, ChannelSpec(), w1, None, w2, None, SpatialSpec(norm=True), sw,
                             bn_mean=mean, bn_var=var, bn_train=True)
            y.sum().backward()
        assert y.shape == x.shape and x.grad.shape == x.shape, backend
        assert mean.item() == 0.5 and var.item() == 2.0, backend
        for p in params:
            assert p.grad is not None and torch.all(p.grad == 0), backend
            p.grad = None
    with attnfused.use_backend(provider), pytest.raises(ValueError, match="more than 1 value"):
        AF.attention(torch.zeros(1, 5, 1, 1, device=DEVICE), spatial=SpatialSpec(norm=True), sw=sw.detach(),
                     bn_mean=mean, bn_var=var, bn_train=True)


@pytest.mark.parametrize("gate", ["fc", "linear"])
def test_strided_biases(gate, provider):
    """Biases that are strided views (a slice of a larger tensor) are read as they are."""
    from attnfused import functional as AF
    from attnfused.spec import ChannelSpec

    c, hidden = 6, 6 if gate == "linear" else 3
    x = make_input((2, c, 4, 5), torch.float32, "nchw")
    w1 = make_input((hidden, c), torch.float32, "nchw", seed=1).requires_grad_(True)
    w2 = make_input((c, hidden), torch.float32, "nchw", seed=2).requires_grad_(True) if gate == "fc" else None
    b1_base = make_input((2 * hidden,), torch.float32, "nchw", seed=3).requires_grad_(True)
    b2_base = make_input((2 * c,), torch.float32, "nchw", seed=4).requires_grad_(True) if gate == "fc" else None
    dy = make_input(x.shape, torch.float32, "nchw", seed=5)
    named = [(n, t) for n, t in (("w1", w1), ("w2", w2), ("b1", b1_base), ("b2", b2_base)) if t is not None]
    leaves = [t for _, t in named]
    out = {}
    for backend in ("reference", provider):
        with attnfused.use_backend(backend):
            b1, b2 = b1_base[::2], None if b2_base is None else b2_base[1::2]
            assert not b1.is_contiguous()
            y = AF.attention(x, ChannelSpec(gate=gate), w1, b1, w2, b2)
            out[backend] = (y, *torch.autograd.grad(y, leaves, dy))
    for name, got, want in zip(["y"] + [n for n, _ in named], out[provider], out["reference"]):
        assert_close(got, want, torch.float32, name)


def test_no_grad_and_inference_mode(provider):
    m = make_block("cbam_fc", 6, torch.float32)
    x = make_input((2, 6, 4, 5), torch.float32, "nchw")
    with attnfused.use_backend("reference"):
        y_ref = m(x)
    with attnfused.use_backend(provider):
        with torch.no_grad():
            y1 = m(x)
        with torch.inference_mode():
            y2 = m(x)
    assert not y1.requires_grad
    assert_close(y1, y_ref.detach(), torch.float32, "no_grad")
    assert_close(y2, y_ref.detach(), torch.float32, "inference_mode")


def test_no_grad_training_updates_batchnorm_statistics(provider):
    """Without grad the op runs its forward body alone (no autograd node): a spatial BatchNorm in
    training still uses batch statistics and updates the running ones, as eager does."""
    from attnfused import functional as AF
    from attnfused.spec import SpatialSpec

    x = make_input((2, 4, 5, 5), torch.float32, "nchw")
    sw = make_input((1, 2, 7, 7), torch.float32, "nchw", seed=1)
    out = {}
    for backend in ("reference", provider):
        mean, var = torch.zeros(1, device=DEVICE), torch.ones(1, device=DEVICE)
        with attnfused.use_backend(backend), torch.no_grad():
            y = AF.attention(x, spatial=SpatialSpec(norm=True), sw=sw, bn_weight=torch.ones(1, device=DEVICE),
                             bn_bias=torch.zeros(1, device=DEVICE), bn_mean=mean, bn_var=var, bn_train=True)
        assert not y.requires_grad and mean.item() != 0.0
        out[backend] = (y, mean, var)
    for got, want, what in zip(out[provider], out["reference"], ("y", "running mean", "running var")):
        assert_close(got, want, torch.float32, what)


def test_weights_in_another_dtype_than_x(provider):
    """fp32 weights with fp64 x (as fp32 weights meet bf16 activations under autocast)."""
    m = make_block("cbam_fc", 6, torch.float32)
    x = make_input((2, 6, 4, 5), torch.float64, "nchw", seed=5).requires_grad_(True)
    with attnfused.use_backend(provider):
        y = m(x)
        y.sum().backward()
    assert y.dtype == torch.float64
    for p in m.parameters():
        assert p.grad.dtype == torch.float32
    m64 = make_block("cbam_fc", 6, torch.float64)
    with attnfused.use_backend("reference"):
        y_ref = m64(x.detach())
    torch.testing.assert_close(y.detach(), y_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block", ["se_avg", "eca", "cbam_fc", "cbam_conv"])
def test_reference_takes_weights_in_another_dtype_too(block, provider):
    """The README's "weights may have another float dtype than x" holds for the reference backend
    (the eager spec, auto's fallback without a fused provider) as for the fused one: eager PyTorch
    itself refuses fp32 weights with bf16 x outside autocast."""
    m = make_block(block, 6, torch.float32)
    x = make_input((2, 6, 4, 5), torch.float32, "nchw", seed=2).to(torch.bfloat16)
    out = {}
    for backend in ("reference", provider):
        xb = x.detach().clone().requires_grad_(True)
        m.zero_grad()
        with attnfused.use_backend(backend):
            y = m(xb)
            y.float().sum().backward()
        assert y.dtype == xb.grad.dtype == torch.bfloat16
        out[backend] = (y.float(), xb.grad.float(), [p.grad.clone() for p in m.parameters()])
    (y0, dx0, g0), (y1, dx1, g1) = out["reference"], out[provider]
    torch.testing.assert_close(y1, y0, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(dx1, dx0, rtol=3e-2, atol=3e-2)
    for a, b in zip(g1, g0):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-2)


def test_autocast(provider):
    """Under autocast the block sees low-precision x and fp32 weights; gates stay in fp32."""
    half = torch.bfloat16
    m = make_block("cbam_fc", 6, torch.float32)
    x = make_input((2, 6, 4, 5), torch.float32, "nchw")
    with torch.autocast(DEVICE.type, dtype=half):
        xh = x.to(half).requires_grad_(True)
        with attnfused.use_backend(provider):
            y = m(xh)
        y.float().sum().backward()
    assert y.dtype == half and xh.grad.dtype == half
    with attnfused.use_backend("reference"):
        y_ref = m(xh.detach().float())
    torch.testing.assert_close(y.float(), y_ref.detach(), rtol=3e-2, atol=3e-2)


@pytest.fixture
def forced_split(monkeypatch):
    """Make every Triton reduction split its loop as far as it can (as on a GPU with few tiles)."""
    from attnfused.kernels.triton import PROVIDER

    monkeypatch.setattr(PROVIDER, "min_programs", 1 << 20)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 70, 3, 5), (1, 20, 17, 19)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("block", ["se_avg", "se_max", "spatial7", "cbam_fc", "cbam_conv"])
def test_split_reductions_match_reference(block, shape, layout, forced_split):
    m = make_block(block, shape[1], torch.float64)
    x = make_input(shape, torch.float64, layout)
    dy = make_input(shape, torch.float64, "nchw", seed=2)
    _assert_fused_matches_reference(m, x, dy, torch.float64, "triton")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("block", ["se_max", "cbam_fc"])
def test_split_reductions_keep_first_index_ties(block, layout, forced_split):
    m = make_block(block, 20, torch.float64)
    x = torch.zeros(2, 20, 6, 7, dtype=torch.float64, device=DEVICE)
    x[:, :, 2:, :] = 1.0  # maxima tied across several splits of H*W and of C
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    dy = make_input((2, 20, 6, 7), torch.float64, "nchw", seed=3)
    _assert_fused_matches_reference(m, x, dy, torch.float64, "triton")


def test_split_plan():
    from attnfused.kernels.triton import _split

    assert _split(1000, 3136, 16, 528) == (1, 3136)  # enough programs: one pass per program
    n, length = _split(32, 3136, 16, 528)  # 32 programs, 196 blocks of P: split
    assert n * 32 >= 528 and length % 16 == 0 and (n - 1) * length < 3136 <= n * length
    assert _split(4, 10, 16, 528) == (1, 16)  # a single block cannot be split
