"""Global-memory traffic of the fused blocks against the streaming budget of DESIGN.md §5.

Counted with :mod:`attnfused.traffic` on the Triton interpreter: every kernel load/store (mask-true
lanes × element size) plus every ATen op that touches a full-size tensor. Budgets in units of
``N * elem_size`` (``N = B*C*H*W``): SE/ECA/spatial-only forward 3 N, backward 4 N; CBAM forward
4 N, backward 6 N; at least the resident minimum (forward 2 N, backward 3 N).
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():  # before attnfused's kernels are imported (conftest does it too)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import attnfused  # noqa: E402
from attnfused.traffic import Traffic, TrafficCounter, count_traffic  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# N = 4608 elements; grids of 12-30 programs per launch keep the interpreter fast.
B, C, H, W = 2, 16, 12, 12
P = H * W
N = B * C * H * W

BLOCKS = {
    "se_avg": lambda: attnfused.SEBlock("avg", C, 4),
    "se_max": lambda: attnfused.SEBlock("max", C, 4),
    "eca": lambda: attnfused.ECABlock(C),
    "cbam_fc": lambda: attnfused.CBAMBlock("FC", 7, channels=C, ratio=4),
    "cbam_conv": lambda: attnfused.CBAMBlock("Conv", 3, channels=C, gamma=2, b=1),
    "spatial": lambda: attnfused.SpatialAttention(7),
}


def _family_cbam(light: bool) -> torch.nn.Module:
    """timm-style CBAM members of the gate family (biases, BatchNorm in training, other maps)."""
    from attnfused import ChannelSpec, FusedAttention, SpatialSpec

    holder = torch.nn.Module()
    holder.fc1, holder.fc2 = torch.nn.Conv2d(C, 4, 1), torch.nn.Conv2d(4, C, 1)
    holder.conv = torch.nn.Conv2d(1 if light else 2, 1, 7, padding=3, bias=False)
    holder.bn = torch.nn.BatchNorm2d(1)
    channel = ChannelSpec(pool="avgmax_mean" if light else "avgmax", act="silu" if light else "relu")
    spatial = SpatialSpec(maps="half_sum" if light else "mean_max", gate_fn="hard_sigmoid" if light else "sigmoid", norm=True)
    return FusedAttention(
        holder, channel, dict(w1="fc1.weight", b1="fc1.bias", w2="fc2.weight", b2="fc2.bias"),
        spatial, dict(weight="conv.weight", bn="bn"),
    ).train()


BLOCKS["cbam_timm_train"] = lambda: _family_cbam(False)
BLOCKS["light_cbam_train"] = lambda: _family_cbam(True)

# (forward, backward) streaming budget, DESIGN.md §5.
BUDGET = {
    "se_avg": (3, 4),
    "se_max": (3, 4),
    "eca": (3, 4),
    "cbam_fc": (4, 6),
    "cbam_conv": (4, 6),
    "spatial": (3, 4),
    "cbam_timm_train": (4, 6),
    "light_cbam_train": (4, 6),
}
FLOOR = (2, 3)  # resident minimum: read x once + write y once; read dy, x once + write dx once
LAYOUTS = ["nchw", "channels_last"]


def _interpreted() -> bool:
    try:
        from attnfused.kernels.triton import INTERPRETED
    except ImportError:
        return False
    return INTERPRETED


needs_interpreter = pytest.mark.skipif(
    not _interpreted(), reason="kernel bytes are only counted for Triton kernels run by the interpreter"
)


def small_allowance(t: Traffic, c: int = C, p: int = P, acc_size: int = 4) -> int:
    """Upper bound on the kernel bytes that go to small tensors (``[B, C]``, ``[B, P]``), from how
    often each program of each recorded launch reloads them (not from a measurement).

    Every program works on one sample. Per program, with the launch's constexpr flags (a flag
    that is missing counts as set, so a renamed flag only loosens the bound):

    - ``reduce_hw_kernel`` (a ``BLOCK_C`` channel tile, loops over all of P): in the ``dot`` form
      (``HAS_X``) re-reads the whole ``[P]`` row of each of ``sa``, ``da``, ``dm``, ``amc``
      present; writes ``BLOCK_C`` entries of the sum (and of max and argmax if ``WANT_MAX``);
    - ``reduce_c_kernel`` (a ``BLOCK_P`` spatial tile, loops over all of C): re-reads the whole
      ``[C]`` row of ``ca`` if present; writes ``BLOCK_P`` entries of sum (max, argmax);
    - ``pointwise_kernel`` (one ``BLOCK_C x BLOCK_P`` tile): reads ``BLOCK_C`` entries of each of
      ``ca, davg, dmax, amp`` and ``BLOCK_P`` entries of each of ``sa, da, dm, amc`` present;
    - ``pointwise_flat_kernel`` (``BLOCK`` elements in memory order): one entry of each term
      present per element;
    - any other kernel: eight whole rows of each kind, ``8 (C + P)``.

    Small tensors are fp32 or int32 (``acc_size`` bytes).
    """
    elems = 0
    for k in t.kernel_launches:
        f = k.constexprs
        bc = min(f.get("BLOCK_C", c), c)
        bp = min(f.get("BLOCK_P", p), p)

        def on(flag: str) -> int:
            return int(bool(f.get(flag, True)))

        rows_p = on("HAS_SA") + on("HAS_DA") + 2 * on("HAS_DM")  # dm comes with amc
        rows_c = on("HAS_CA") + on("HAS_DAVG") + 2 * on("HAS_DMAX")  # dmax comes with amp
        outs = 1 + 2 * on("WANT_MAX")
        if k.name == "reduce_hw_kernel":
            per_program = on("HAS_X") * rows_p * p + outs * bc
        elif k.name == "reduce_c_kernel":
            per_program = on("HAS_CA") * c + outs * bp
        elif k.name == "pointwise_kernel":
            per_program = rows_c * bc + rows_p * bp
        elif k.name == "pointwise_flat_kernel":  # gathers each term per element (L1 hits on a GPU)
            per_program = (rows_c + rows_p) * f.get("BLOCK", 8 * (c + p))
        else:
            per_program = 8 * (c + p)
        elems += k.programs * per_program
    return elems * acc_size


def check_budget(t: Traffic, budget: float, floor: float, numel: int, esize: int, allowance: int) -> list[str]:
    """Problems with a measured run (empty list: within budget).

    - full-size bytes (kernel loads/stores that hit full-size tensors + ATen bytes) must be at most
      ``budget`` passes, exactly: small tensors are not part of this number;
    - all bytes (including the kernels' small-tensor traffic) at most ``budget`` passes plus
      ``allowance`` (see :func:`small_allowance`);
    - full-size bytes at least ``floor`` passes (the resident minimum: shows the counter counts).
    """
    unit = numel * esize
    problems = []
    if t.full_bytes > budget * unit:
        problems.append(f"full-size traffic {t.full_bytes / unit:.3f} N > budget {budget} N")
    if t.total_bytes > budget * unit + allowance:
        problems.append(
            f"total traffic {t.total_bytes / unit:.3f} N > budget {budget} N + small allowance "
            f"{allowance / unit:.3f} N"
        )
    if t.full_bytes < floor * unit:
        problems.append(f"full-size traffic {t.full_bytes / unit:.3f} N < resident minimum {floor} N")
    return problems


def _input(layout: str, shape: tuple[int, int, int, int] = (B, C, H, W)) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g).to(DEVICE)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_(True)


def _block(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return BLOCKS[name]().to(DEVICE)


def _measure(
    name: str, layout: str, backend: str = "triton", shape: tuple[int, int, int, int] = (B, C, H, W)
) -> tuple[Traffic, Traffic]:
    """(forward traffic, backward traffic); the forward of the backward run is not counted."""
    m, x = _block(name), _input(layout, shape)
    with attnfused.use_backend(backend):
        fwd = count_traffic(m, x, full_numel=x.numel())
        y = fwd.result
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(DEVICE)
        dy = dy.to(memory_format=torch.channels_last) if layout == "channels_last" else dy
        bwd = count_traffic(y.backward, dy, full_numel=x.numel())
    assert x.grad is not None and x.grad.shape == x.shape
    return fwd, bwd


@needs_interpreter
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(BLOCKS))
def test_fused_traffic_within_streaming_budget(name, layout):
    fwd, bwd = _measure(name, layout)
    esize = 4
    problems = [
        f"forward: {p}" for p in check_budget(fwd, BUDGET[name][0], FLOOR[0], N, esize, small_allowance(fwd))
    ] + [
        f"backward: {p}" for p in check_budget(bwd, BUDGET[name][1], FLOOR[1], N, esize, small_allowance(bwd))
    ]
    assert not problems, (
        f"{name}/{layout}: {problems}\n forward {fwd.summary(esize, N)}\n backward {bwd.summary(esize, N)}"
    )
    # The fused path touches full-size tensors only inside its kernels.
    assert fwd.aten_ops == [] and bwd.aten_ops == [], (fwd.aten_ops, bwd.aten_ops)


@needs_interpreter
@pytest.mark.parametrize("name", ["se_max", "cbam_fc"])
def test_flat_pointwise_kernel_keeps_the_budget(name):
    """NCHW 7x7 (rows of 49: the tiled pointwise kernel cannot align them) takes the flat
    pointwise kernel for y and dx (attnfused/kernels/triton/_pointwise.py): the same budget."""
    shape = (B, C, 7, 7)
    n = B * C * 49
    fwd, bwd = _measure(name, "nchw", shape=shape)
    for t in (fwd, bwd):
        assert "pointwise_flat_kernel" in {k.name for k in t.kernel_launches}
    problems = check_budget(fwd, BUDGET[name][0], FLOOR[0], n, 4, small_allowance(fwd, C, 49)) + check_budget(
        bwd, BUDGET[name][1], FLOOR[1], n, 4, small_allowance(bwd, C, 49)
    )
    assert not problems, (problems, fwd.summary(4, n), bwd.summary(4, n))


@needs_interpreter
def test_eager_cbam_forward_costs_more_than_fused():
    """The same counter on the eager reference sees its ATen traffic (x1 = x * ca materialised...)."""
    fused, _ = _measure("cbam_fc", "nchw", "triton")
    eager, _ = _measure("cbam_fc", "nchw", "reference")
    assert eager.kernel_bytes == 0 and eager.aten_ops
    assert eager.total_bytes > fused.total_bytes
    assert eager.full_bytes > fused.full_bytes
    assert eager.per_element(4, N) >= 6  # eager CBAM forward, DESIGN.md §5: ~7 N


@needs_interpreter
def test_budget_check_catches_an_extra_pass(monkeypatch):
    """Doctor the provider: ``scale`` also runs a ``dot_hw`` (2 N) and a full-size ``clone`` (an ATen
    op inside the custom op's implementation). The budget check must flag it."""
    import attnfused.kernels.triton as kt

    provider = kt.PROVIDER
    scale = type(provider).scale

    def scale_with_extra_pass(x, ca, sa):
        provider.dot_hw(x, x)
        x.clone()
        return scale(provider, x, ca, sa)

    monkeypatch.setattr(provider, "scale", scale_with_extra_pass)
    fwd, _ = _measure("se_avg", "nchw")
    problems = check_budget(fwd, BUDGET["se_avg"][0], FLOOR[0], N, 4, small_allowance(fwd))
    assert any("full-size traffic" in p and "> budget" in p for p in problems), problems
    # 3 N + dot_hw (2 N) + clone (read N, write N)
    assert fwd.kernel_full_bytes == 5 * N * 4
    assert fwd.aten_ops == ["aten.clone.default"] and fwd.aten_bytes == 2 * N * 4


# -- the counter itself ----------------------------------------------------------------------------


def test_aten_counting_rules():
    x = torch.randn(64, 32)
    n = x.numel()
    e = x.element_size()

    def f():
        a = x * 2  # read N, write N
        b = a.view(32, 64).t().contiguous()  # views free; contiguous of a transposed view copies: 2 N
        torch.empty_like(x)  # allocation only
        x.detach().contiguous()  # aliases only
        b.add_(1)  # in place: read N, write N
        b.copy_(x)  # write-only destination: read N, write N
        (x[:1] * 3)  # small: not counted
        return b

    t = count_traffic(f, full_numel=n)
    assert t.aten_ops == ["aten.mul.Tensor", "aten.clone.default", "aten.add_.Tensor", "aten.copy_.default"]
    assert t.aten_read_bytes == 4 * n * e and t.aten_write_bytes == 4 * n * e
    assert t.kernel_bytes == 0 and t.result.shape == (64, 32)
    # An expanded gradient (stride 0) is read as its distinct elements.
    g = torch.randn(64, 1).expand(64, 32)
    t = count_traffic(lambda: g * 1.0, full_numel=n)
    assert t.aten_read_bytes == 64 * e and t.aten_write_bytes == n * e


@needs_interpreter
def test_kernel_counting_per_lane_and_restored_on_error():
    import triton
    import triton.language as tl
    from triton.runtime import interpreter as ti

    @triton.jit
    def tile_copy(X, Y, R, S, BR: tl.constexpr, BS: tl.constexpr):
        r = tl.arange(0, BR)
        s = tl.arange(0, BS)
        mask = (r[:, None] < R) & (s[None, :] < S)
        v = tl.load(X + r[:, None] * S + s[None, :], mask=mask, other=0.0)
        tl.store(Y + r[:, None] * S + s[None, :], v.to(tl.float64), mask=mask)
        tl.store(Y + r * 0, tl.zeros([BR], tl.float64), mask=r < 1)  # one small-lane store

    x = torch.randn(3, 5)
    y = torch.empty(3, 5, dtype=torch.float64)
    t = count_traffic(lambda: tile_copy[(2,)](x, y, 3, 5, BR=4, BS=8), full_numel=15)
    assert t.kernel_read_bytes == 2 * 15 * 4  # 2 programs x 15 mask-true lanes x fp32
    assert t.kernel_write_bytes == 2 * (15 + 1) * 8  # fp64 stores
    assert t.kernel_full_read_bytes == t.kernel_read_bytes
    assert [(k.name, k.programs) for k in t.kernel_launches] == [("tile_copy", 2)]
    assert t.aten_ops == []  # the interpreter's host-copy bookkeeping is not counted

    originals = (ti.InterpreterBuilder.create_masked_load, ti.GridExecutor.__call__)

    def boom():
        with TrafficCounter(15):
            raise KeyError("boom")

    with pytest.raises(KeyError):
        boom()
    assert (ti.InterpreterBuilder.create_masked_load, ti.GridExecutor.__call__) == originals
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    assert _get_current_dispatch_mode() is None


@needs_interpreter
@pytest.mark.parametrize("name", ["se_avg", "se_max", "eca"])
def test_eager_reference_does_what_the_source_does(name):
    """The reference backend is the source's eager code: one pooling pass and one rescale (3 N),
    no extra pass (e.g. computing a max it does not use)."""
    eager, _ = _measure(name, "nchw", "reference")
    assert eager.kernel_bytes == 0
    assert abs(eager.per_element(4, N, full_only=True) - 3.0) < 1e-9, eager.aten_ops
