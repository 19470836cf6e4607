"""The compiled extension attnfused._C: it was built (with CUDA kernels wherever nvcc is present),
and its ops refuse bad input with an error instead of reading out of bounds."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

import pytest
import torch
import torch.nn.functional as F

from attnfused._machine import cpu_fields
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
        (lambda: ops.spatial_stage(_x(2, 3, 4, 4), _x(2, 3), _x(1, 2, 3, 2), None, 0, False), "k odd"),
        (lambda: ops.spatial_stage(_x(2, 3, 4, 4), _x(2, 3), _x(1, 2, 3, 3), None, 2, False), "weight"),
        (lambda: ops.spatial_stage(_x(2, 3, 4, 4), _x(2, 3), _x(1, 2, 3, 3), None, 3, False), "maps"),
        (lambda: ops.spatial_stage(_x(2, 3, 4, 4), _x(5), _x(1, 2, 3, 3), None, 0, False), "6 elements"),
        (lambda: ops.channel_stage(_x(2, 3, 4, 4), 3, True, _x(1, 1, 3), None, None, None, 0, 0, True), "pool"),
        (lambda: ops.channel_stage(_x(2, 3, 4, 4), 0, True, _x(1, 1, 2), None, None, None, 0, 0, True), "k odd"),
        (lambda: ops.channel_stage(_x(2, 3, 4, 4), 0, False, _x(2, 3), None, None, None, 0, 0, True), "needs w2"),
        (lambda: ops.channel_stage(_x(2, 3, 4, 4), 2, False, _x(2, 3), None, _x(3, 3), None, 0, 0, True),
         "w2 \\[C, R\\]"),
        (lambda: ops.channel_stage(_x(2, 3, 4, 4), 0, False, _x(2, 3), None, _x(3, 2), None, 2, 0, True), "act"),
        (lambda: ops.channel_stage(_x(2, 3, 4, 4), 0, True, _x(1, 1, 3), None, None, None, 0, 2, True), "gate"),
        (lambda: ops.channel_stage(_x(2, 3, 4, 4), 0, True, _x(1, 1, 3).double(), None, None, None, 0, 0, True),
         "accumulation dtype"),
        (lambda: ops.spatial_stage(_x(2, 3, 4, 4), _x(2, 3), _x(1, 2, 3, 3), None, 0, False, 0, True, _x(1, 1, 3)),
         "not both"),
        (lambda: ops.reduce_hw(_x(2, 3, 0, 4), None, None, None, None, None, True, 1.0), "empty axis \\(H\\*W"),
        (lambda: ops.reduce_c(_x(2, 0, 4, 4), None, None, True, 1.0), "empty axis \\(C"),
        (lambda: ops.channel_stage(_x(2, 3, 0, 4), 1, True, _x(1, 1, 3), None, None, None, 0, 0, True), "H\\*W >= 1"),
        (lambda: ops.spatial_stage(_x(2, 0, 4, 4), None, _x(1, 2, 3, 3), None, 0, False), "C >= 1"),
        (lambda: ops.spatial_stage(_x(2, 3, 4, 4), _x(2, 3), _x(1, 2, 3, 3).int(), None, 0, False), "floating"),
    ],
    ids=["not-4d", "int-dtype", "x-shape", "small-numel", "small-dtype", "dm-without-amc", "max-of-dot",
         "non-contiguous", "dmax-without-amp", "like-dtype", "stage-even-kernel", "stage-maps-weight",
         "stage-maps-kind", "stage-ca-shape", "cstage-pool", "cstage-even-kernel", "cstage-no-w2",
         "cstage-w2-shape", "cstage-act", "cstage-gate", "cstage-weight-dtype", "stage-ca-and-gate",
         "max-over-empty-hw", "max-over-empty-c", "cstage-empty-hw", "stage-empty-c", "stage-int-weight"],
)
def test_ops_refuse_bad_input(call, match):
    if not extension_status()["built"]:
        pytest.skip("attnfused._C not built (test_extension_is_built says why)")
    with pytest.raises(RuntimeError, match=match):
        call()


_needs_ext = pytest.mark.skipif(not extension_status()["built"], reason="attnfused._C not built")


# (b, m, h, w, kh, kw, ph, pw, bias) of the gate convolution tests (also run on the CUDA kernels
# under the emulator, tests/test_cuemu.py).
GATE_CONV_CASES = [
    (3, 2, 9, 11, 7, 7, 3, 3, True),  # CBAM's spatial conv on an odd map
    (2, 1, 5, 4, 7, 7, 3, 3, False),  # kernel larger than the map
    (1, 2, 1, 1, 3, 3, 1, 1, True),  # 1x1 map
    (4, 1, 1, 37, 1, 5, 0, 2, False),  # ECA's 1-D conv as 1 x k
    (2, 1, 1, 9, 1, 3, 0, 0, False),  # after circular padding: no zero padding
    (2, 3, 6, 5, 3, 5, 0, 1, True),  # rectangular kernel, uneven padding
    (0, 2, 5, 5, 3, 3, 1, 1, True),  # empty batch: zero weight gradients
]


def gate_conv_case_id(case: tuple) -> str:
    return "x".join(map(str, case[:8])) + ("-bias" if case[8] else "")


def check_gate_conv(gate_ops, dtype: torch.dtype, case: tuple, device: str = "cpu") -> tuple:
    """``gate_ops.gate_conv`` / ``gate_conv_backward`` against F.conv2d and aten's
    convolution_backward on ``case`` on ``device``; returns what they gave (forward, then the three
    gradients)."""
    b, m, h, w, kh, kw, ph, pw, bias = case
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(b, m, h, w, generator=g, dtype=dtype).to(device)
    weight = torch.randn(1, m, kh, kw, generator=g, dtype=dtype).to(device)
    bvec = torch.randn(1, generator=g, dtype=dtype).to(device) if bias else None
    want = torch.nn.functional.conv2d(maps, weight, bvec, padding=(ph, pw))
    got = gate_ops.gate_conv(maps, weight, bvec, ph, pw)
    # fp32: sums of up to b*Ho*Wo products (the weight gradient) in another order than aten's
    n = max(1, b * want.shape[-2] * want.shape[-1])
    tol = dict(rtol=1e-5, atol=1e-6 * n**0.5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, want, **tol)
    dz = torch.randn(want.shape, generator=g, dtype=dtype).to(device)
    want_d = torch.ops.aten.convolution_backward(
        dz, maps, weight, [1] if bias else None, [1, 1], [ph, pw], [1, 1], False, [0, 0], 1, [True, True, bias]
    )
    got_d = gate_ops.gate_conv_backward(dz, maps, weight, ph, pw, bias)
    torch.testing.assert_close(got_d[0], want_d[0], **tol)
    torch.testing.assert_close(got_d[1], want_d[1], **tol)
    if bias:
        torch.testing.assert_close(got_d[2], want_d[2], **tol)
    else:
        assert got_d[2].numel() == 0
    return (got, *got_d)


# (B, n stacked statistics, C, R, act, gate_fn, bias1, bias2): R above and below a warp, C not a
# multiple of 32, C = R = 1, an empty batch (zero weight gradients). For the "cpu" provider's kernels
# (csrc/cpu/fc_gate.cpp) here, the "cuda" provider's in tests/test_cuemu.py (emulated) and
# tests/test_gpu.py. On CPU, sums shorter than a vector (R = 5: z's), whole vectors only (96 x 32:
# every column strip full), and a tail of each kind (260 x 130).
FC_GATE_CASES = [
    (3, 1, 37, 5, "relu", "sigmoid", False, False),
    (2, 2, 70, 33, "relu", "sigmoid", True, True),
    (1, 1, 1, 1, "silu", "hard_sigmoid", True, True),
    (5, 1, 300, 40, "silu", "sigmoid", True, False),
    (6, 2, 64, 4, "relu", "hard_sigmoid", False, True),
    (0, 1, 16, 4, "relu", "sigmoid", True, True),
    # several tiles on every axis of fc_gate.cu's kernels, the last one partial: 2 r tiles of 128
    # (dr, dW2), 5 c tiles of 64 (dW1, ds) and 9 chunks of 32 channels (dr), 3 sample tiles of 4
    # (dr, z) and 3 row tiles of 8 (h)
    (9, 2, 260, 130, "relu", "sigmoid", True, True),
    (5, 2, 96, 32, "silu", "sigmoid", True, True),
]


def fc_gate_case_id(case: tuple) -> str:
    return "x".join(map(str, case[:4])) + f"-{case[4]}-{case[5]}" + "".join("-b" + str(i + 1) for i in (0, 1) if case[6 + i])


def check_fc_gate(provider, dtype: torch.dtype, case: tuple, device: str = "cpu") -> tuple:
    """``provider.fc_gate`` / ``fc_gate_backward`` (the "cpu" or "cuda" provider's, or the emulator's) against
    autograd through F.linear on ``device``; returns what they gave."""
    b, n, c, r, act, gate_fn, bias1, bias2 = case
    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).to(device).requires_grad_()

    s, w1, w2 = rand(n * b, c), rand(r, c, scale=c**-0.5), rand(c, r, scale=r**-0.5)
    b1 = rand(r) if bias1 else None
    b2 = rand(c) if bias2 else None
    h = F.linear(s, w1, b1)
    zs = F.linear(F.relu(h) if act == "relu" else F.silu(h), w2, b2)
    z = zs[:b] + zs[b:] if n == 2 else zs
    # relu6(z + 3) / 6, not F.hardsigmoid: its backward scales by a float32 1/6 (3e-8 off in fp64)
    ca = torch.sigmoid(z) if gate_fn == "sigmoid" else F.relu6(z + 3) / 6
    w = {"w1": w1.detach(), "b1": None if b1 is None else b1.detach(), "w2": w2.detach(), "b2": None if b2 is None else b2.detach()}
    got = got_ca, got_z, got_h = provider.fc_gate(s.detach(), w, n, act, gate_fn)
    # fp32: sums of up to C products (h, ds, dw1 over n B rows), in another order than aten's
    tol = dict(rtol=1e-5, atol=1e-6 * max(c, n * b, r) ** 0.5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for x, want in zip(got, (ca, z, h)):
        torch.testing.assert_close(x, want.detach(), **tol)
    dca = torch.randn(b, c, generator=g, dtype=dtype).to(device)
    wrt = [t for t in (s, w1, b1, w2, b2) if t is not None]
    want_d = iter(torch.autograd.grad(ca, wrt, dca, allow_unused=True))
    got_d = provider.fc_gate_backward(dca, s.detach(), got_z, got_ca, got_h, w, n, act, gate_fn)
    for x, t in zip(got_d, (s, w1, b1, w2, b2)):
        if t is None:
            assert x is None
            continue
        want = next(want_d)
        torch.testing.assert_close(x, torch.zeros_like(t) if want is None else want, **tol)
    return (*got, *(x for x in got_d if x is not None))


@_needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", GATE_CONV_CASES, ids=gate_conv_case_id)
def test_gate_conv_matches_torch(dtype, case):
    """The CPU gates' thin convolution against F.conv2d and aten's convolution_backward."""
    check_gate_conv(ops, dtype, case)


@_needs_ext
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ops.gate_conv(_x(2, 2, 5, 5), _x(1, 1, 3, 3), None, 1, 1), "weight"),
        (lambda: ops.gate_conv(_x(2, 2, 5, 5), _x(1, 2, 3, 3).double(), None, 1, 1), "one dtype"),
        (lambda: ops.gate_conv(_x(2, 2, 5, 5).half(), _x(1, 2, 3, 3).half(), None, 1, 1), "float32 or float64"),
        (lambda: ops.gate_conv(_x(2, 2, 5, 5).transpose(2, 3), _x(1, 2, 3, 3), None, 1, 1), "contiguous"),
        (lambda: ops.gate_conv(_x(2, 2, 2, 2), _x(1, 2, 7, 7), None, 0, 0), "larger"),
        (lambda: ops.gate_conv(_x(2, 2, 5, 5), _x(1, 2, 3, 3), _x(2), 1, 1), "1 elements"),
        (lambda: ops.gate_conv_backward(_x(2, 1, 4, 4), _x(2, 2, 5, 5), _x(1, 2, 3, 3), 1, 1, False), "dz"),
    ],
    ids=["weight-maps", "dtype-mix", "half", "non-contiguous", "kernel-too-large", "bias-numel", "dz-shape"],
)
def test_gate_conv_refuses_bad_input(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()


def _terms(b: int, c: int, p: int, which: str) -> dict:
    """Small terms of the pointwise kernel for one pattern (see attnfused.kernels)."""
    g = torch.Generator().manual_seed(7)

    def r(*shape):
        return torch.rand(shape, generator=g)

    def idx(n, *shape):
        return torch.randint(0, n, shape, generator=g, dtype=torch.int32)

    terms = {"ca": r(b, c)}
    if which in ("forward_ca_sa", "cbam_backward"):
        terms["sa"] = r(b, p)
    if which == "se_backward":
        terms["davg"] = r(b, c)
    if which == "cbam_backward":
        terms.update(da=r(b, p), dm=r(b, p), amc=idx(c, b, p), davg=r(b, c), dmax=r(b, c), amp=idx(p, b, c))
    if which == "se_max_backward":  # argmaxes also at a row's first and last element (unaligned head, tail)
        amp = idx(p, b, c)
        amp[:, 0::3], amp[:, 1::3] = 0, p - 1
        terms.update(dmax=r(b, c), amp=amp)
    return terms


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype, shape", [(torch.float32, (3, 37, 139, 211)), (torch.bfloat16, (5, 61, 139, 211)),
                                          (torch.float16, (5, 61, 139, 211))])
@pytest.mark.parametrize("which", ["forward_ca", "forward_ca_sa", "se_backward", "se_max_backward", "cbam_backward"])
def test_pointwise_streaming_stores_match_plain_stores(which, dtype, shape, layout):
    """Outputs of >= 8 MiB leave through streaming stores (csrc/cpu/common.h, kStreamBytes), each
    sample's (< 8 MiB) through plain ones: both must write the same bits, odd row lengths and
    unaligned row starts included."""
    if not extension_status()["built"]:
        pytest.skip("attnfused._C not built (test_extension_is_built says why)")
    from attnfused.kernels.extension import CPU

    b, c, h, w = shape
    assert b * c * h * w * dtype.itemsize >= 8 << 20 > c * h * w * dtype.itemsize
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    a = torch.randn(shape).to(dtype).contiguous(memory_format=fmt)
    like = torch.randn(shape).to(dtype).contiguous(memory_format=fmt)
    terms = _terms(b, c, h * w, which)

    def run(i: slice):
        part = {k: v[i].contiguous() for k, v in terms.items()}
        if which.startswith("forward"):
            return CPU.scale(a[i], part["ca"], part.get("sa"))
        return CPU.grad_input(a[i], like[i], **part)

    whole = run(slice(None))
    assert whole.is_contiguous(memory_format=fmt)
    for s in range(b):
        assert torch.equal(whole[s:s + 1], run(slice(s, s + 1))), f"sample {s}"
    if which == "se_max_backward":  # and both are right: dy ca + dmax at the argmax, one rounding
        onehot = torch.zeros(b, c, h * w).scatter_(2, terms["amp"].long().unsqueeze(2), 1.0).view(shape)
        want = a.float() * terms["ca"][:, :, None, None] + onehot * terms["dmax"][:, :, None, None]
        assert torch.equal(whole, want.to(dtype))


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("maps, gate_fn, bias, with_ca", [
    ("max_mean", "sigmoid", False, True), ("mean_max", "hard_sigmoid", True, True),
    ("half_sum", "sigmoid", True, False), ("half_sum", "hard_sigmoid", False, True),
])
def test_spatial_stage_matches_the_separate_passes(maps, gate_fn, bias, with_ca, dtype, layout):
    """attnfused_C::spatial_stage (CBAM's spatial forward, sample by sample) against pool_c + the maps +
    gate_conv + the gate + scale of the same provider (the path it replaces; the block tests check that
    one against the eager reference)."""
    if not extension_status()["built"]:
        pytest.skip("attnfused._C not built (test_extension_is_built says why)")
    from attnfused.kernels.extension import CPU
    from attnfused.ops import _gates
    from attnfused.spec import SpatialSpec

    b, c, h, w = 3, 21, 9, 7
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    x = torch.randn(b, c, h, w).to(dtype).contiguous(memory_format=fmt)
    ca = torch.rand(b, c, dtype=acc) if with_ca else None
    spec = SpatialSpec(maps=maps, gate_fn=gate_fn)
    weight = torch.randn(1, spec.n_maps, 5, 5, dtype=acc)
    sb = torch.randn(1, dtype=acc) if bias else None

    y, mp, amc, sa, z = CPU.spatial_stage(x, ca, weight, sb, maps, gate_fn == "hard_sigmoid")
    m, mean, amc_ref = CPU.pool_c(x, ca)
    mp_ref = _gates.spatial_maps(m.view(b, h, w), mean.view(b, h, w), spec)
    sa_ref, _, z_ref = _gates.spatial_forward(mp_ref, spec, {"weight": weight, "bias": sb}, CPU)
    y_ref = CPU.scale(x, ca, sa_ref.reshape(b, h * w))
    assert torch.equal(mp, mp_ref) and torch.equal(amc, amc_ref) and torch.equal(z, z_ref)
    torch.testing.assert_close(sa, sa_ref.reshape(b, h * w), rtol=4e-7 if acc == torch.float32 else 1e-15, atol=0)
    assert y.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(y, y_ref, rtol=1e-6 if dtype != torch.bfloat16 else 8e-3, atol=0)


def _record_calls(monkeypatch, owner, name: str, record, calls: Optional[list] = None) -> list:
    """Wraps ``owner.name`` (for the test) so that each call appends ``record(args, kwargs, result)``
    to ``calls`` (a new list if None), which it returns."""
    calls = [] if calls is None else calls
    real = getattr(owner, name)

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(record(args, kwargs, out))
        return out

    monkeypatch.setattr(owner, name, spy)
    return calls


def _check_cpu_block(block: str, shape: tuple) -> None:
    """A block (tests/helpers.py's BLOCKS) on the "cpu" backend against the reference: y, dx and the
    weight gradients, fp32 NCHW."""
    from helpers import assert_close, make_block, make_input, run_fwd_bwd

    m = make_block(block, shape[1], torch.float32)
    x = make_input(shape, torch.float32, "nchw")
    dy = make_input(x.shape, torch.float32, "nchw", seed=2)
    got, want = run_fwd_bwd(m, x, "cpu", dy), run_fwd_bwd(m, x, "reference", dy)
    assert_close(got[0], want[0], torch.float32, "y")
    assert_close(got[1], want[1], torch.float32, "dx")
    for k in want[2]:
        assert_close(got[2][k], want[2][k], torch.float32, k)


_CHANNEL_STAGE_GATES = {  # name: ChannelSpec arguments
    "fc-relu": dict(gate="fc"),
    "fc-silu-hard": dict(gate="fc", act="silu", gate_fn="hard_sigmoid"),
    "conv": dict(gate="conv"),
    "conv-hard": dict(gate="conv", gate_fn="hard_sigmoid"),
}


# A shape whose channels the shared schedule splits over 2+ threads: 1189 positions make the
# kernels' grain 13 channels (csrc/cpu/common.h, grain_for; a part has at least that many, stages.cpp,
# split_channels), so 37 channels make two parts, [0, 18) and [18, 37).
_SHARED_SHAPE = (2, 37, 41, 29)


@pytest.fixture
def two_threads():
    """At least two intra-op threads (so that the shared schedule splits a sample), then as before."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(2, before))
    yield
    torch.set_num_threads(before)


def _channel_stage_case(gate: str, pool: str, dtype: torch.dtype, layout: str, k: int, bias: str,
                        shape: tuple = (3, 21, 9, 7)):
    """(ChannelSpec, x of ``shape``, the gate's weights in the accumulation dtype, that dtype, x's
    memory format) for the channel stage tests: a k-tap conv, or an fc gate with R = 5 and one bias.
    Seeded, so that a case's data does not depend on which tests ran before it: unseeded, after the
    bench tests, a gate logit near -90 made a ``ca`` of ~1e-39 and a subnormal y, where the
    one-ulp difference the sigmoids may have becomes a larger relative one than the y check's."""
    from attnfused.spec import ChannelSpec

    cs = ChannelSpec(pool=pool, **_CHANNEL_STAGE_GATES[gate])
    (b, c, h, w), r = shape, 5
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w, generator=g).to(dtype).contiguous(memory_format=fmt)
    if cs.gate == "conv":
        return cs, x, {"w1": torch.randn(1, 1, k, dtype=acc, generator=g), "b1": None, "w2": None, "b2": None}, acc, fmt
    wts = {"w1": torch.randn(r, c, dtype=acc, generator=g), "b1": None,
           "w2": torch.randn(c, r, dtype=acc, generator=g), "b2": None}
    wts[bias] = torch.randn(r if bias == "b1" else c, dtype=acc, generator=g)
    return cs, x, wts, acc, fmt


@_needs_ext
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("pool", ["avg", "max", "avgmax"])
@pytest.mark.parametrize("gate", list(_CHANNEL_STAGE_GATES))
@pytest.mark.parametrize("shared", [False, True], ids=["per_thread", "shared"])
def test_channel_stage_matches_the_separate_passes(shared, gate, pool, dtype, layout, monkeypatch, two_threads):
    """attnfused_C::channel_stage (SE's and ECA's forward, sample by sample; a task per sample, or
    each sample split over the threads by channel) against pool_hw + the gate + scale of the same
    provider, with the "fc" gate on the provider's kernels (the path it replaces; the block tests
    check that one against the eager reference). The pools, argmax and conv logits are the same
    bits; the sigmoids may round differently (aten's vector and scalar loops split a row
    differently), so the rest to within an ulp or two."""
    from attnfused.kernels.extension import CPU
    from attnfused.ops import _gates

    monkeypatch.setattr(CPU, "fc_gate_max_rows", None)  # the reference's gate on the same kernels
    shape = _SHARED_SHAPE if shared else (3, 21, 9, 7)
    cs, x, wts, acc, fmt = _channel_stage_case(gate, pool, dtype, layout, k=5, bias="b1", shape=shape)
    y, avg, mx, amp, ca, z, hid = CPU.ops.channel_stage(
        x, ("avg", "max", "avgmax").index(pool), cs.gate == "conv", wts["w1"], wts["b1"], wts["w2"], wts["b2"],
        ("relu", "silu").index(cs.act), ("sigmoid", "hard_sigmoid").index(cs.gate_fn), True, shared,
    )
    use_max = pool != "avg"
    avg_ref, mx_ref, amp_ref = CPU.pool_hw(x, use_max)
    ca_ref, z_ref, h_ref = _gates.channel_forward(avg_ref if pool != "max" else None, mx_ref, cs, wts, CPU)
    y_ref = CPU.scale(x, ca_ref, None)
    assert torch.equal(avg, avg_ref)
    if use_max:
        assert torch.equal(mx, mx_ref) and torch.equal(amp, amp_ref)
    else:
        assert mx.numel() == 0 and amp.numel() == 0
    ulp = 5e-7 if acc == torch.float32 else 1e-15
    if cs.gate == "fc":
        torch.testing.assert_close(hid, h_ref, rtol=0, atol=0)  # before any sigmoid
        torch.testing.assert_close(z, z_ref, rtol=ulp if cs.act == "silu" else 0, atol=ulp)
    else:
        assert hid.numel() == 0 and torch.equal(z, z_ref)
    torch.testing.assert_close(ca, ca_ref, rtol=ulp, atol=ulp)
    assert y.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(y, y_ref, rtol=1e-6 if dtype != torch.bfloat16 else 8e-3, atol=0)


@_needs_ext
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("gate, pool", [("fc-relu", "avgmax"), ("conv", "avgmax"), ("fc-silu-hard", "avg"), ("conv-hard", "max")])
def test_spatial_stage_with_the_channel_stage_matches_the_passes(gate, pool, dtype, layout, monkeypatch):
    """attnfused_C::spatial_stage with CBAM's channel stage inside its per-sample loop against
    pool_hw + the channel gate + pool_c + the spatial gate + scale (same provider, fc gate on its
    kernels): the channel outputs as in test_channel_stage_matches_the_separate_passes, then the
    spatial ones."""
    from attnfused.kernels.extension import CPU
    from attnfused.ops import _gates
    from attnfused.spec import SpatialSpec

    monkeypatch.setattr(CPU, "fc_gate_max_rows", None)
    cs, x, wts, acc, fmt = _channel_stage_case(gate, pool, dtype, layout, k=3, bias="b2")
    ss = SpatialSpec(maps="max_mean")
    weight = torch.randn(1, 2, 7, 7, dtype=acc)
    y, mp, amc, sa, z, avg, mx, amp, ca, zc, hid = CPU.spatial_stage(x, None, weight, None, ss.maps, False,
                                                                      channel=(cs, wts))
    use_max = pool != "avg"
    avg_ref, mx_ref, amp_ref = CPU.pool_hw(x, use_max)
    ca_ref, zc_ref, h_ref = _gates.channel_forward(avg_ref if pool != "max" else None, mx_ref, cs, wts, CPU)
    assert torch.equal(avg, avg_ref) and (not use_max or (torch.equal(mx, mx_ref) and torch.equal(amp, amp_ref)))
    ulp = 5e-7 if acc == torch.float32 else 1e-15
    torch.testing.assert_close(ca, ca_ref, rtol=ulp, atol=ulp)
    torch.testing.assert_close(zc, zc_ref, rtol=ulp, atol=ulp)
    if cs.gate == "fc":
        assert torch.equal(hid, h_ref)
    # the spatial half from the stage's own ca (the gate's last ulp is the channel test's business)
    y_ref, mp_ref, amc_ref, sa_ref, z_ref = CPU.spatial_stage(x, ca, weight, None, ss.maps, False)
    assert torch.equal(mp, mp_ref) and torch.equal(amc, amc_ref) and torch.equal(z, z_ref) and torch.equal(sa, sa_ref)
    assert y.is_contiguous(memory_format=fmt) and torch.equal(y, y_ref)


@_needs_ext
@pytest.mark.parametrize("with_channel", [False, True], ids=["ca", "channel_stage"])
def test_spatial_stage_without_argmax(with_channel):
    """No backward follows (want_arg False): the spatial stage's pool over C skips the channel
    argmax (amc empty), and with the channel stage inside, its max pool the spatial one (amp
    empty); every other output is the same bits."""
    from attnfused.kernels.extension import CPU

    cs, x, wts, _, _ = _channel_stage_case("conv", "avgmax", torch.float32, "nchw", k=3, bias="b1")
    weight = torch.randn(1, 2, 7, 7)
    ca = None if with_channel else torch.rand(x.shape[:2])
    kw = dict(channel=(cs, wts)) if with_channel else {}
    full = CPU.spatial_stage(x, ca, weight, None, "max_mean", False, **kw)
    lean = CPU.spatial_stage(x, ca, weight, None, "max_mean", False, want_arg=False, **kw)
    assert full[2].shape == x.shape[:1] + (x.shape[2] * x.shape[3],) and lean[2].shape == (0,)
    if with_channel:
        assert full[7].shape == x.shape[:2] and lean[7].shape == (0,)
    for i, (a, b) in enumerate(zip(full, lean)):
        assert i in (2, 7) or torch.equal(a, b), i


@_needs_ext
@pytest.mark.parametrize("want_arg", [True, False])
def test_channel_stage_max_without_argmax(want_arg):
    """No backward follows (for_backward False): the max pool skips its argmax, as pool_hw does."""
    x = torch.randn(4, 6, 5, 5)
    out = ops.channel_stage(x, 1, True, torch.randn(1, 1, 3), None, None, None, 0, 0, want_arg)
    assert out[3].shape == ((4, 6) if want_arg else (0,))
    assert torch.equal(out[2], x.amax((2, 3)))


@_needs_ext
def test_channel_stage_takes_the_blocks_it_should(monkeypatch):
    """Which blocks run sample by sample on CPU, and how: on Intel CPUs only, the gates the op has,
    "fc" weights no larger than a sample; samples larger than a core's L2 whose per-thread share
    fits it split over the threads ("shared"), else whole samples per thread where the batch
    divides. Blocks the rule refuses run the passes."""
    from attnfused.kernels import extension
    from attnfused.kernels.extension import channel_stage_schedule as schedule
    from attnfused.spec import ChannelSpec

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(extension, "_l2_bytes", lambda: 1 << 20)
    monkeypatch.setattr(extension, "_cpu_vendor", lambda: "GenuineIntel")
    conv = {"w1": torch.randn(1, 1, 3), "w2": None}

    def fc(c, r):
        return {"w1": torch.randn(r, c), "w2": torch.randn(c, r)}

    x = torch.empty(8, 64, 8, 8)
    assert schedule(x, ChannelSpec(gate="conv"), conv) == "per_thread"
    assert schedule(x, ChannelSpec(gate="conv", conv_padding="circular"), conv) is None
    assert schedule(x, ChannelSpec(gate="conv"), {"w1": torch.randn(1, 1, 4), "w2": None}) is None
    assert schedule(x, ChannelSpec(gate="conv", pool="avgmax_mean"), conv) is None
    assert schedule(x, ChannelSpec(gate="linear"), {"w1": torch.randn(64, 64), "w2": None}) is None
    for batch, takes in [(0, None), (1, None), (2, "per_thread"), (3, None), (7, None), (8, "per_thread"),
                         (9, "per_thread")]:
        assert schedule(torch.empty(batch, 64, 8, 8), ChannelSpec(gate="conv"), conv) == takes, batch
    # fc weights: 2 C R elements against C P (fp32 x): 2 R <= P
    assert schedule(x, ChannelSpec(), fc(64, 32)) == "per_thread"
    assert schedule(x, ChannelSpec(), fc(64, 33)) is None
    assert schedule(x.to(torch.bfloat16), ChannelSpec(), fc(64, 32)) is None
    # a sample above the L2: shared whatever the batch while half of it fits, but not on one
    # thread or with an unknown L2
    big = torch.empty(1, 256, 32, 33)  # 1 081 344 bytes
    assert schedule(big, ChannelSpec(gate="conv"), conv) == "shared"
    assert schedule(big[:, :, :, :32], ChannelSpec(gate="conv"), conv) is None  # exactly 1 MiB
    assert schedule(torch.empty(2, 512, 32, 32), ChannelSpec(gate="conv"), conv) == "shared"  # share 1 MiB
    assert schedule(torch.empty(2, 513, 32, 32), ChannelSpec(gate="conv"), conv) == "per_thread"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert schedule(big, ChannelSpec(gate="conv"), conv) == "per_thread"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    # other vendors' CPUs: the passes, whatever the shape
    for vendor in ("AuthenticAMD", ""):
        monkeypatch.setattr(extension, "_cpu_vendor", lambda v=vendor: v)
        for shape in [(1, 256, 32, 33), (2, 512, 32, 32), (8, 64, 8, 8)]:
            assert schedule(torch.empty(shape), ChannelSpec(gate="conv"), conv) is None, (vendor, shape)
    monkeypatch.setattr(extension, "_cpu_vendor", lambda: "GenuineIntel")
    monkeypatch.setattr(extension, "_l2_bytes", lambda: None)
    assert schedule(big, ChannelSpec(gate="conv"), conv) is None
    # ResNet-50's stages at C / 16, batch 8: with the Intel VM's 2 MiB L2, 56^2 (3.2 MB samples)
    # shared, 28^2 and 14^2 per thread, 7^2 not taken (weights 5x a sample); with a 1 MiB L2 a
    # 56^2 share (1.6 MB) no longer fits and 28^2's (0.8 MB) does
    for l2, takes in [(2 << 20, ["shared", "per_thread", "per_thread", None]),
                      (1 << 20, ["per_thread", "shared", "per_thread", None])]:
        monkeypatch.setattr(extension, "_l2_bytes", lambda v=l2: v)
        for (c, p), want in zip([(256, 56), (512, 28), (1024, 14), (2048, 7)], takes):
            assert schedule(torch.empty(8, c, p, p), ChannelSpec(), fc(c, c // 16)) == want, (l2, c)


@pytest.mark.parametrize("caches, want", [
    ({"index0": ("1", "Data", "48K"), "index1": ("1", "Instruction", "32K"), "index2": ("2", "Unified", "2048K"),
      "index3": ("3", "Unified", "480M")}, 2 << 20),
    ({"index0": ("1", "Data", "32K"), "index2": ("2", "Unified", "1M")}, 1 << 20),
    ({"index0": ("1", "Data", "32K")}, None),
    ({"index2": ("2", "Unified", "big")}, None),
    (None, None),
])
def test_l2_size_is_read_from_sysfs(caches, want, tmp_path, monkeypatch):
    """The shared schedule's bound: cpu0's level-2 cache from sysfs; None without one (or unreadable)."""
    from helpers import write_fake_caches

    from attnfused.kernels import extension

    write_fake_caches(tmp_path, caches or {})
    monkeypatch.setattr(extension, "_CPU0_CACHES", tmp_path if caches is not None else tmp_path / "absent")
    monkeypatch.setattr(extension, "_state", {})
    assert extension._l2_bytes() == want


def test_cpu_vendor_is_read_once(tmp_path, monkeypatch):
    """The vendor rules' input: /proc/cpuinfo's vendor_id, read on the first call only (the CPU
    forwards ask on every call); "" without one."""
    from attnfused.kernels import extension

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\n")
    monkeypatch.setattr(extension, "_CPUINFO", info)
    monkeypatch.setattr(extension, "_state", {})
    assert extension._cpu_vendor() == "AuthenticAMD"
    info.write_text("vendor_id\t: GenuineIntel\n")
    assert extension._cpu_vendor() == "AuthenticAMD"
    for text in (None, "processor\t: 0\n"):
        monkeypatch.setattr(extension, "_state", {})
        if text is None:
            info.unlink()
        else:
            info.write_text(text)
        assert extension._cpu_vendor() == ""


@_needs_ext
@pytest.mark.parametrize("block, batch, l2, vendor, staged", [
    ("se_avg", 4, 1 << 20, "GenuineIntel", "per_thread"), ("eca", 2, 1 << 20, "GenuineIntel", "per_thread"),
    ("se_max", 3, 1 << 20, "GenuineIntel", None), ("se_max", 3, 8 << 10, "GenuineIntel", "shared"),
    ("eca", 1, 8 << 10, "GenuineIntel", "shared"), ("se_avg", 4, 1 << 20, "AuthenticAMD", None),
    ("eca", 1, 8 << 10, "AuthenticAMD", None), ("cbam_fc", 3, 1 << 20, "GenuineIntel", True),
    ("cbam_conv", 1, 1 << 20, "AuthenticAMD", True),
])
def test_blocks_use_the_channel_stage(block, batch, l2, vendor, staged, monkeypatch):
    """SE and ECA blocks on CPU run attnfused_C::channel_stage where the rule takes them (samples of
    9 KB: shared with an Intel CPU's 8 KB "L2" on two threads; never on others), CBAM its spatial
    stage with the channel stage inside whatever the batch and CPU (and all match the reference)."""
    from attnfused.kernels import extension
    from attnfused.kernels.extension import CPU

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(extension, "_l2_bytes", lambda: l2)
    monkeypatch.setattr(extension, "_cpu_vendor", lambda: vendor)
    calls = _record_calls(monkeypatch, extension, "channel_stage_schedule", lambda args, kwargs, out: out)
    _record_calls(monkeypatch, CPU, "spatial_stage", lambda args, kwargs, out: ("spatial", "channel" in kwargs), calls)
    _check_cpu_block(block, (batch, 16, 12, 12))
    assert calls == ([staged] if not block.startswith("cbam") else [("spatial", staged)])


@_needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape", [(2, 37, 41, 29), (3, 1, 5, 7), (2, 33, 1, 1), (1, 64, 8, 4)])
def test_cpu_pointwise_copy_between_layouts(shape, dtype):
    """pointwise with no terms is a copy into ``like``'s layout; between NCHW and channels_last it
    runs in 32 x 32 tiles (csrc/cpu/pointwise.cpp, copy_tiles): the same bits as aten's copy, on
    shapes that are not multiples of the tile, C = 1, H = W = 1, from a batch slice, either way."""
    from attnfused.kernels.extension import CPU

    nothing = (None,) * 8
    big = torch.randn(shape[0] + 2, *shape[1:]).to(dtype)
    for src_fmt, dst_fmt in [(torch.channels_last, torch.contiguous_format),
                             (torch.contiguous_format, torch.channels_last)]:
        like = torch.empty(shape, dtype=dtype).contiguous(memory_format=dst_fmt)
        for src in (big.contiguous(memory_format=src_fmt)[1:-1], big[1:-1].contiguous(memory_format=src_fmt)):
            got = CPU.ops.pointwise(src, like, True, *nothing)
            assert got.is_contiguous(memory_format=dst_fmt) and torch.equal(got, src), (src_fmt, src.stride())


@_needs_ext
@pytest.mark.parametrize("x_layout", ["nchw", "channels_last"])
def test_cpu_backward_reads_a_dense_dy(x_layout, monkeypatch):
    """The cpu provider's backward passes get dy unit-stride along x's rows: a dy that already is
    (either dense layout matching x, a batch slice) as it comes, the stride-0 gradient of
    ``y.sum()`` and a dy in the other layout as one copy in x's layout; the block's gradients match
    the reference's either way."""
    from helpers import assert_close, make_block, make_input, run_fwd_bwd

    from attnfused.kernels.extension import CPU

    x = make_input((3, 6, 5, 7), torch.float32, x_layout)
    fmt = torch.channels_last if x_layout == "channels_last" else torch.contiguous_format
    other = torch.contiguous_format if x_layout == "channels_last" else torch.channels_last
    dense = torch.randn(x.shape).contiguous(memory_format=fmt)
    sliced = torch.randn(5, 6, 5, 7).contiguous(memory_format=fmt)[1:4]
    assert CPU.dense_grad(dense, x) is dense and CPU.dense_grad(sliced, x) is sliced
    copies = _record_calls(monkeypatch, CPU.ops, "pointwise", lambda args, kwargs, out: args[0].stride())
    for dy in (torch.ones(()).expand(x.shape), dense.contiguous(memory_format=other)):
        got = CPU.dense_grad(dy, x)
        assert got.is_contiguous(memory_format=fmt) and torch.equal(got, dy)
    assert copies == [dense.contiguous(memory_format=other).stride()]  # the other layout in tiles
    # [B, C, 1, 1] expanded: unit-stride along C, which is what channels_last rows need
    per_channel = torch.randn(3, 6, 1, 1).expand(x.shape)
    got = CPU.dense_grad(per_channel, x)
    assert (got is per_channel) == (x_layout == "channels_last") and torch.equal(got, per_channel)
    assert got.is_contiguous(memory_format=fmt) or x_layout == "channels_last"
    # in a block (y.sum()'s gradient): grad_input sees the copy; the gradients are the reference's
    seen = _record_calls(monkeypatch, CPU, "grad_input", lambda args, kwargs, out: args[0].is_contiguous(memory_format=fmt))
    m = make_block("se_avg", 6, torch.float32)
    dy = torch.ones(()).expand(x.shape)
    got, want = run_fwd_bwd(m, x, "cpu", dy), run_fwd_bwd(m, x, "reference", dy)
    assert seen == [True]
    assert_close(got[1], want[1], torch.float32, "dx")
    for k in want[2]:
        assert_close(got[2][k], want[2][k], torch.float32, k)


@_needs_ext
def test_fc_gate_size_rule_follows_the_machine(monkeypatch):
    """The "cpu" provider's own "fc" gate kernels by default: not on Intel CPUs (MKL was as fast or
    faster there), up to 64 stacked rows elsewhere; ATTNFUSED_CPU_FC_GATE=0 / 1 forces either."""
    from attnfused.kernels import extension

    monkeypatch.delenv("ATTNFUSED_CPU_FC_GATE", raising=False)
    for vendor, rows in [("GenuineIntel", 0), ("AuthenticAMD", 64), ("", 64)]:
        monkeypatch.setattr(extension, "_cpu_vendor", lambda v=vendor: v)
        assert extension._default_fc_gate_max_rows() == rows, vendor
        for forced, want in [("0", 0), ("1", 64)]:
            monkeypatch.setenv("ATTNFUSED_CPU_FC_GATE", forced)
            assert extension._default_fc_gate_max_rows() == want
        monkeypatch.delenv("ATTNFUSED_CPU_FC_GATE")
    assert extension._cpu_vendor() in ("", "GenuineIntel", "AuthenticAMD") or extension._cpu_vendor().isprintable()


@_needs_ext
@pytest.mark.parametrize(
    "var, hooks",
    [
        ("ATTNFUSED_CUDA_GATE_CONV", ("CUDA.gate_conv", "CUDA.gate_conv_backward")),
        ("ATTNFUSED_CUDA_FC_GATE", ("CUDA.fc_gate", "CUDA.fc_gate_backward")),
        ("ATTNFUSED_CPU_FC_GATE", ("CPU.fc_gate", "CPU.fc_gate_backward")),
        ("ATTNFUSED_CPU_STAGES", ("CPU.channel_stage", "CPU.spatial_stage")),
    ],
)
def test_gate_kernel_switches(var, hooks):
    """The providers' gates use their own kernels unless ``var=0`` (read at import), which hands
    them back to the libraries (F.conv*d, F.linear), and the CPU forwards run sample by sample
    unless ATTNFUSED_CPU_STAGES=0; the other switches' hooks stay as they are."""
    import subprocess
    import sys

    names = [f"{p}.{h}" for p in ("CUDA", "CPU") for h in ("gate_conv", "gate_conv_backward", "fc_gate", "fc_gate_backward")]
    names += ["CPU.channel_stage", "CPU.spatial_stage"]
    code = "from attnfused.kernels.extension import CPU, CUDA\nprint(" + ", ".join(f"{n} is None" for n in names) + ")\n"
    for value in ("0", "1"):
        env = dict(os.environ, **{var: value})
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        want = [str(value == "0" and n in hooks) for n in names]
        assert out.returncode == 0 and out.stdout.split()[-len(names):] == want, out.stdout + out.stderr


@_needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", FC_GATE_CASES, ids=fc_gate_case_id)
def test_cpu_fc_gate_matches_autograd(case, dtype):
    """csrc/cpu/fc_gate.cpp (the "cpu" provider's "fc" channel gate) against autograd through
    F.linear, and bit for bit the same on one thread as on several: every sum runs in a fixed
    order, whatever tile or thread an output falls to."""
    from attnfused.kernels.extension import CPU

    threads = torch.get_num_threads()
    try:
        many = check_fc_gate(CPU, dtype, case)
        torch.set_num_threads(1)
        one = check_fc_gate(CPU, dtype, case)
    finally:
        torch.set_num_threads(threads)
    assert len(many) == len(one) and all(torch.equal(a, b) for a, b in zip(many, one))


def fc_gate_digest() -> str:
    """sha256 over every fp32 output of the "cpu" provider's fc gate, forward and backward, on
    FC_GATE_CASES and two ResNet-sized gates (8 x 2048 by 128, CBAM's 2 x 16 x 512 by 32)."""
    import hashlib

    from attnfused.kernels.extension import CPU

    digest = hashlib.sha256()
    for case in FC_GATE_CASES + [(8, 1, 2048, 128, "relu", "sigmoid", True, True),
                                 (16, 2, 512, 32, "relu", "sigmoid", False, False)]:
        for t in check_fc_gate(CPU, torch.float32, case):
            digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


@_needs_ext
def test_cpu_fc_gate_avx512_loops_give_the_same_bits():
    """Where the CPU has AVX-512F the fp32 gate runs csrc/cpu/fc_gate.cpp's 64-byte loops
    (AF_WIDE): the same sums as the 32-byte loops every x86-64 CPU runs, element for element, so the
    same bits. ATTNFUSED_CPU_AVX512=0 (read at load, hence a fresh process) keeps the 32-byte loops."""
    if "avx512f" not in cpu_fields().get("flags", "").split():
        pytest.skip("no AVX-512F on this CPU: only the 32-byte loops run here")
    code = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_extension as t; " \
           "print(t.fc_gate_digest())"
    env = dict(os.environ, ATTNFUSED_CPU_AVX512="0")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == fc_gate_digest()


@_needs_ext
@pytest.mark.parametrize("batch", [32, 33], ids=["64-rows-own-kernels", "66-rows-mkl"])
def test_cpu_fc_gate_hands_many_rows_to_mkl(batch, monkeypatch):
    """CBAM-FC stacks 2 B rows into its gate: the "cpu" provider runs its own products up to
    fc_gate_max_rows (64 where it is not 0) and aten's (MKL) above; both paths match the reference."""
    from attnfused.kernels.extension import CPU
    from attnfused.ops import _gates

    used = _record_calls(monkeypatch, _gates, "_fused_fc_gate", lambda args, kwargs, out: out is not None)
    monkeypatch.setattr(CPU, "fc_gate_max_rows", 64)  # the AMD rule (on Intel the default is 0: MKL)
    _check_cpu_block("cbam_fc", (batch, 16, 3, 3))
    assert used == [batch <= 32] * 2  # forward, backward


def check_fc_gate_refuses_bad_arguments(gate_ops) -> None:
    """Shapes, dtypes and codes the "fc" gate's kernels do not take raise a clear error (never a
    launch); ``gate_ops``: the extension's op namespace, or the emulator's."""
    s, w1, w2 = torch.randn(4, 8), torch.randn(2, 8), torch.randn(8, 2)
    with pytest.raises(RuntimeError, match="s \\[n B, C\\], w1 \\[R, C\\] and w2 \\[C, R\\]"):
        gate_ops.fc_gate(s, w1, None, torch.randn(8, 3), None, 1, 0, 0)
    with pytest.raises(RuntimeError, match="must be 1 or 2"):
        gate_ops.fc_gate(s, w1, None, w2, None, 3, 0, 0)
    with pytest.raises(RuntimeError, match="act must be"):
        gate_ops.fc_gate(s, w1, None, w2, None, 1, 2, 0)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        gate_ops.fc_gate(s.half(), w1.half(), None, w2.half(), None, 1, 0, 0)
    with pytest.raises(RuntimeError, match="b1 must be contiguous with 2 elements"):
        gate_ops.fc_gate(s, w1, torch.randn(3), w2, None, 1, 0, 0)
    with pytest.raises(RuntimeError, match="contiguous"):
        gate_ops.fc_gate(s, w1, None, w2.t().contiguous().t(), None, 1, 0, 0)
    ca, z, h = gate_ops.fc_gate(s, w1, None, w2, None, 2, 0, 0)
    with pytest.raises(RuntimeError, match="h must be contiguous \\[4, 2\\]"):
        gate_ops.fc_gate_backward(ca, s, z, ca, h[:2], w1, w2, 2, False, False, 0, 0)


@_needs_ext
def test_fc_gate_refuses_bad_arguments():
    check_fc_gate_refuses_bad_arguments(ops)


@_needs_ext
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("c", [7, 70, 127, 128, 130, 300])
@pytest.mark.parametrize("hw", [(3, 2), (3, 5), (7, 7), (8, 8)], ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_pool_c_of_scaled_x_keeps_first_index(hw, c, dtype, layout):
    """pool_c's max of x * ca on CPU (CBAM's spatial pool): channels_last rows of C take 1, 2 or 3
    accumulator vectors by length (csrc/cpu/reduce.h ``rows``), NCHW tiles fold four rows of C at
    a time and the rest one by one; fp32 NCHW maps of 8-63 positions (3x5, 7x7) sweep the channels
    with the outputs in vectors (``short_tiles``, the last vector overlapping), 64 (8x8) in tiles
    again. ca holds powers of two, so x * ca is exact and ties are exact: each goes to its first
    channel; a NaN wins at the first NaN, a -inf column keeps channel 0. fp16 rows are read through
    float buffers (common.h RowIO, TileRows; the NaN rule re-reads them row by row), bf16 ones in
    place."""
    g = torch.Generator().manual_seed(c)
    x = torch.randn(2, c, *hw, generator=g, dtype=dtype)
    ca = torch.exp2(torch.randint(-2, 3, (2, c), generator=g).to(dtype))
    ties = [[0, c - 1], [c - 1], [c // 2, c // 3, c // 5], [c // 7, c - 2], [1 % c, c - 1]]
    for q in range(6):
        b, p = q % 2, q // 2
        chans = ties[q % len(ties)]
        x[b, chans, p, q % 2] = (9.0 + q % 3) / ca[b, chans]
    x[1, [c // 2, c - 1], 2, 1] = float("nan")
    x[0, :, 2, 1] = float("-inf")
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    ca_acc = ca.to(torch.float64 if dtype == torch.float64 else torch.float32)
    mean, mx, arg = ops.reduce_c(x, None, ca_acc, True, float(c))
    x1 = (x * ca[:, :, None, None]).to(mx.dtype)  # fp16 / bf16: x1 as eager has it, rounded (exact here)
    want_mx, want_arg = x1.flatten(2).max(dim=1)
    torch.testing.assert_close(mx, want_mx, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(arg.long(), want_arg), (arg, want_arg)
    torch.testing.assert_close(mean, x1.flatten(2).mean(1), equal_nan=True)


@_needs_ext
@pytest.mark.parametrize("want_arg", [True, False], ids=["with-argmax", "max-only"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("c", [7, 70])
@pytest.mark.parametrize("p", [3, 15, 49, 70, 100, 130, 300])
def test_pool_max_keeps_first_index_at_every_row_length(p, c, dtype, layout, want_arg):
    """pool_hw's max on CPU: NCHW rows (csrc/cpu/reduce.cpp) reduce short, middle and long rows with
    1, 2 and 4 accumulator vectors, channels_last tiles sweep rows of channels. Ties at positions
    spread over vectors and accumulators go to the first, a NaN wins at the first NaN, -inf rows
    and a -0.0/0.0 tie keep the first element, as torch.max. ``want_arg=False`` (a forward no
    backward follows): the same max values, no argmax. Channels_last tiles fold rows four at a time
    and the rest one by one (p % 4 is 0 to 3 here); 70 channels: vector lanes and a scalar rest.
    fp16 rows go through float buffers, bf16 tiles' max through the chunked schedule."""
    g = torch.Generator().manual_seed(p)
    x = torch.randn(2, c, p, 1, generator=g, dtype=dtype)
    ties = [[0, p - 1], [p - 1], [p // 2, p // 3, p // 5], [p // 7, p - 2], [1 % p, p - 1]]
    for ch in range(c):
        x[0, ch, ties[ch % len(ties)], 0] = 9.0 + ch % 3
    x[1, 0, [p // 2, p - 1], 0] = float("nan")
    x[1, 1] = float("-inf")
    x[1, 2] = -1.0
    x[1, 2, [p // 3, p - 1], 0] = torch.tensor([-0.0, 0.0], dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    avg, mx, arg = ops.reduce_hw(x, None, None, None, None, None, True, float(p), want_arg)
    want_mx, want_arg_idx = x.flatten(2).max(dim=2)
    torch.testing.assert_close(mx, want_mx.to(mx.dtype), equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(avg, x.flatten(2).to(avg.dtype).mean(2), equal_nan=True)
    if want_arg:
        assert torch.equal(arg.long(), want_arg_idx), (arg, want_arg_idx)
        assert torch.equal(torch.signbit(mx), torch.signbit(want_mx))
    else:
        assert arg.numel() == 0


def _cpu_has_f16c() -> bool:
    flags = cpu_fields().get("flags", "").split()
    return "f16c" in flags and "avx2" in flags


def check_fp16_conversions(layout: str) -> str:
    """The checks of test_cpu_fp16_conversions_are_exact; returns the path that ran, "f16c" or
    "software", told apart by the NaNs: F16C keeps a NaN's payload (quietened), the software path
    writes 0x7E00 with the sign (csrc/cpu/half.cpp)."""
    from attnfused.kernels.extension import CPU

    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    bits = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16)
    x = bits.view(torch.float16).view(4, 64, 16, 16).contiguous(memory_format=fmt)
    nan = x.isnan()
    assert nan.sum() == 2 * 1023  # (the test's own check: it holds every NaN pattern)

    def same_bits(got: torch.Tensor, want: torch.Tensor) -> None:
        assert torch.equal(got.isnan(), want.isnan())
        ok = ~want.isnan()
        assert torch.equal(got[ok].view(torch.int16), want[ok].view(torch.int16))

    y = CPU.scale(x, torch.ones(4, 64), None)
    same_bits(y, x)
    got_nan = y[nan].view(torch.int16)
    if torch.equal(got_nan, x[nan].view(torch.int16) | 0x0200):
        path = "f16c"
    else:
        assert torch.equal(got_nan, (x[nan].view(torch.int16) & -0x8000) | 0x7E00), "NaNs neither F16C's nor 0x7E00"
        path = "software"
    # Factors that land products on ties (1 + 2^-11), in the subnormal range (2^-14 ..) and past
    # the largest fp16 (2^10 ..), per channel.
    g = torch.tensor([1 + 2.0 ** -11, 1 - 2.0 ** -12, 3.0, 1 / 3, 2.0 ** -14, 2.0 ** -20, 0.7 * 2.0 ** -9, 2.0 ** 10,
                      1.5 * 2.0 ** 5, -1.0, 0.0, 2.0 ** 16, 1e-30, 65504.0 / 65520, 1.0009765625, 7.0])
    ca = g.repeat(4, 4)
    want = (x.float() * ca[:, :, None, None]).half()
    same_bits(CPU.scale(x, ca, None), want)
    # CBAM's forward rounds x * ca to fp16 (as eager materialises it) before the spatial gate and
    # its pool over channels: factors that are not powers of two, so that a missing rounding shows
    # (in y, and in the fp32 max and its index: rounding makes ties).
    gen = torch.Generator().manual_seed(0)
    x = (1 + torch.rand(2, 37, 5, 7, generator=gen)).half().contiguous(memory_format=fmt)
    ca, sa = 0.5 + torch.rand(2, 37, generator=gen), 0.5 + torch.rand(2, 35, generator=gen)
    x1 = (x.float() * ca[:, :, None, None]).half().float()
    same_bits(CPU.scale(x, ca, sa), (x1 * sa.view(2, 1, 5, 7)).half())
    _, mx, arg = ops.reduce_c(x, None, ca, True, 37.0)
    want_mx, want_arg = x1.flatten(2).max(1)
    same_bits(mx, want_mx)
    assert torch.equal(arg.long(), want_arg)
    # The avg pool over H*W of fp16 rows (NCHW: summed as loaded, half.cpp) adds the same values in
    # the same order as over the rows converted to fp32: the same bits, rows of every accumulator
    # depth (short, < 64, < 128, longer), with a masked last vector or none, signed zeros and
    # infinities included. Magnitudes spread over 2^-12 .. 2^12, so that partial sums round and a
    # change of order shows (fp16 values of one scale sum exactly in fp32, in any order).
    for p in (5, 8, 49, 100, 196):
        spread = 2.0 ** torch.randint(-12, 13, (2, 19, p, 1), generator=gen)
        xp = (torch.randn(2, 19, p, 1, generator=gen) * spread).half().contiguous(memory_format=fmt)
        xp[0, 0] = -0.0
        xp[1, 3, p // 2] = float("inf")
        avg16 = ops.reduce_hw(xp, None, None, None, None, None, False, float(p), False)[0]
        avg32 = ops.reduce_hw(xp.float(), None, None, None, None, None, False, float(p), False)[0]
        same_bits(avg16, avg32)
    return path


@pytest.mark.parametrize("f16c", ["as-built", "off"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_cpu_fp16_conversions_are_exact(layout, f16c):
    """The cpu provider converts fp16 rows with F16C where the CPU has it and with its own
    branch-free code elsewhere (csrc/cpu/half.cpp, common.h Half; ATTNFUSED_CPU_F16C=0 forces the
    latter, in a fresh process: it is read at load). Either way every one of the 2^16 fp16 values
    must come back as itself through y = x * 1, and x * g must round as eager's float-then-half
    does, ties to even, subnormals and overflow to inf included; CBAM's x * ca is rounded to fp16
    before its gate and pool, as eager has it; the avg pool sums fp16 rows as it sums them in fp32.
    Bits are compared, NaNs only as NaNs (their payloads
    tell which path ran)."""
    if not extension_status()["built"]:
        pytest.skip("attnfused._C not built (test_extension_is_built says why)")
    if f16c == "as-built":
        assert check_fp16_conversions(layout) == ("f16c" if _cpu_has_f16c() else "software")
        return
    code = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_extension as t; " \
           f"print(t.check_fp16_conversions({layout!r}))"
    env = dict(os.environ, ATTNFUSED_CPU_F16C="0")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == "software"
