"""The CUDA emulator (tests/cuemu) and what it shows of the CUDA kernels without a GPU.

The block tests run the "cuemu" provider like any other (parity, gradcheck, opcheck, compile, bad
input). Here: that the emulator behaves as CUDA does and refuses what CUDA leaves undefined (its
own kernels, tests/cuemu/selftest_kernels.cpp), and what the block tests do not reach: results that
do not depend on the schedule, every launch shape (the emulated GPUs' SM counts decide how the
reductions split), which kernel (vector or scalar) each layout gets, the bytes each pass and block
moves (DESIGN.md §5), out-of-bounds accesses (an AddressSanitizer build), 64-bit offsets, and the
ResNet-50 stage shapes of tests/test_gpu.py.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

import attnfused
import cuemu
from attnfused.traffic import count_traffic
from test_traffic import BLOCKS as TRAFFIC_BLOCKS, BUDGET as TRAFFIC_BUDGET
from test_traffic import _block as traffic_block, _input as traffic_input
from helpers import TOL, assert_close, assert_close_but_max_ties, make_block, make_input, max_tie_mask, run_fwd_bwd
from attnfused.kernels.extension import CPU
from test_extension import (
    FC_GATE_CASES, GATE_CONV_CASES, check_fc_gate, check_fc_gate_refuses_bad_arguments, check_gate_conv, fc_gate_case_id,
    gate_conv_case_id,
)

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the real kernels (tests/test_gpu.py)")

EMU = cuemu.PROVIDER
DEVICES = range(4)  # tests/cuemu/runtime.cpp's table: 2, 132, 1 and 7 SMs


@pytest.fixture(autouse=True)
def _default_schedule():
    cuemu.load()
    cuemu.configure(0, "forward")
    yield
    cuemu.configure(0, "forward")


# ---- The emulator itself.


def test_shuffle_and_vote_semantics():
    """PTX's shfl.sync rules as CUDA's intrinsics use them (segments of ``width`` lanes; a butterfly
    past its segment's end keeps its own value, below its start reads there), ballot/any/all."""
    out = torch.zeros(32, 10, dtype=torch.int32)
    assert cuemu.selftest("shuffle_semantics", out) is None
    for lane in range(32):
        first, last4 = lane & ~7, (lane & ~3) + 3
        expected = [
            70,
            10 * (first + 3),
            10 * (lane - 1 if lane % 16 >= 1 else lane),
            10 * (lane + 3 if lane % 8 + 3 < 8 else lane),
            10 * (lane ^ 5),
            10 * ((lane ^ 4) if (lane ^ 4) <= last4 else lane),
            sum(1 << i for i in range(0, 32, 3)),
            1,
            0,
            32,
        ]
        assert out[lane].tolist() == expected, f"lane {lane}"


def test_block_sum_is_right_and_the_same_in_every_order():
    x = torch.randn(4, 1000, dtype=torch.float64).float()
    results = []
    for order in ("forward", "reverse", "random", "warp_ahead"):
        cuemu.configure(0, order, seed=3)
        buf = torch.cat([x.flatten(), torch.zeros(4)])
        assert cuemu.selftest("block_sum", buf) is None
        results.append(buf[4000:].clone())
    torch.testing.assert_close(results[0], x.double().sum(1).float(), rtol=1e-5, atol=1e-4)
    assert all(torch.equal(r, results[0]) for r in results), "a fixed shuffle tree sums the same way in any order"


@pytest.mark.parametrize(
    "case, message",
    [
        ("shuffle_after_return", "which has returned"),
        ("barrier_after_return", "__syncthreads() reached after some threads of the block returned"),
        ("mismatched_collectives", "different warp collectives"),
        ("read_outside_mask", "not in the mask"),
        ("deadlock", "deadlock"),
        ("block_too_large", "invalid block"),
        ("empty_grid", "invalid grid"),
        ("smem_over_default", "dynamic shared memory of 65536 bytes"),
    ],
)
def test_refuses_what_cuda_leaves_undefined(case, message):
    err = cuemu.selftest(case, torch.zeros(4096))
    assert err is not None and message in err, err
    assert "block (0,0,0)" in err or "invalid" in err or "shared memory" in err, "the message says where"


def test_raised_shared_memory_limit_is_honoured():
    assert cuemu.selftest("smem_raised", torch.zeros(64)) is None


def test_missing_barrier_shows_as_a_schedule_difference():
    """What the determinism tests below rely on: a race through shared memory gives different
    results when the threads run in another order."""
    outs = []
    for order in ("forward", "reverse"):
        cuemu.configure(0, order)
        out = torch.zeros(4 * 64)
        assert cuemu.selftest("missing_barrier", out) is None
        outs.append(out)
    assert not torch.equal(outs[0], outs[1])


def test_warp_ahead_order_catches_a_missing_end_of_turn_barrier():
    """The lockstep orders hold every warp at each shuffle, so a loop without a barrier at the end
    of its turn still sums right in them; "warp_ahead" lets a warp run a turn ahead and shows it
    (what the fc gate's CTA-tile loops rely on)."""
    want = sum(10 * turn + w for turn in range(4) for w in range(4))
    got = {}
    for order in ("forward", "reverse", "random", "warp_ahead"):
        cuemu.configure(0, order, seed=1)
        out = torch.zeros(1)
        assert cuemu.selftest("missing_turn_barrier", out) is None
        got[order] = out.item()
    assert got["forward"] == got["reverse"] == got["random"] == want, got
    assert got["warp_ahead"] != want, got


def test_unwritten_dynamic_shared_memory_reads_nan():
    out = torch.zeros(64)
    assert cuemu.selftest("unwritten_dynamic_shared", out) is None
    assert out[0] == 1 and torch.isnan(out[1:]).all()


@pytest.mark.parametrize("bf16", [False, True], ids=["fp16", "bf16"])
def test_half_conversions_match_torch(bf16):
    """cuemu's __float2half_rn / __float2bfloat16_rn and back, bit for bit against torch's (both
    round to nearest even), on every 16-bit pattern and on float32 patterns around each rounding
    boundary, subnormals and overflow included. NaNs only need to stay NaN."""
    dtype = torch.bfloat16 if bf16 else torch.float16
    bits = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16)
    ours = cuemu.from_half_bits(bits, bf16)
    theirs = bits.view(dtype).float()
    nan = torch.isnan(theirs)
    assert torch.equal(torch.isnan(ours), nan) and torch.equal(ours[~nan], theirs[~nan])
    # float32 inputs: the 16-bit values, their neighbours in float32 and midpoints between them.
    f = theirs[~nan]
    mid = (f[:-1].double() + f[1:].double()) / 2
    g = torch.Generator().manual_seed(0)
    rand = torch.randint(-(1 << 31), 1 << 31, (1 << 18,), generator=g, dtype=torch.int64).to(torch.int32).view(torch.float32)
    xs = torch.cat([f, torch.nextafter(f, torch.tensor(math.inf)), torch.nextafter(f, torch.tensor(-math.inf)),
                    mid.float(), rand, torch.tensor([65504.0, 65519.99, 65520.0, 1e-8, -1e-8, 5.96e-8, 2.98e-8])])
    ours = cuemu.to_half_bits(xs, bf16)
    theirs = xs.to(dtype).view(torch.int16)
    nan = torch.isnan(xs)
    assert torch.equal(ours[~nan], theirs[~nan])
    assert torch.isnan(ours[nan].view(dtype)).all()


# ---- The CUDA kernels on it.


def _terms(b: int, c: int, p: int, dtype: torch.dtype, seed: int = 0) -> dict:
    """Every small term of the passes, in the accumulation dtype of inputs of ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    acc = torch.float64 if dtype == torch.float64 else torch.float32

    def f(t: torch.Tensor) -> torch.Tensor:
        return t.to(acc)

    return {
        "ca": f(torch.rand(b, c, generator=g) + 0.5), "sa": f(torch.rand(b, p, generator=g) + 0.5),
        "da": f(torch.randn(b, p, generator=g)), "dm": f(torch.randn(b, p, generator=g)),
        "amc": torch.randint(0, c, (b, p), generator=g, dtype=torch.int32),
        "davg": f(torch.randn(b, c, generator=g)), "dmax": f(torch.randn(b, c, generator=g)),
        "amp": torch.randint(0, p, (b, c), generator=g, dtype=torch.int32),
    }


def _all_passes(prov, x: torch.Tensor, dy: torch.Tensor, t: dict) -> list[torch.Tensor]:
    """Every pass of the provider contract (attnfused/kernels/__init__.py), with every term."""
    out = [*prov.pool_hw(x, True), *prov.pool_c(x, t["ca"]), *prov.pool_c(x, None)]
    out.append(prov.dot_hw(dy, x, t["sa"], t["da"], t["dm"], t["amc"]))
    out.append(prov.dot_hw(dy, x))
    out.append(prov.dot_c(dy, x, t["ca"]))
    out.append(prov.scale(x, t["ca"], t["sa"]))
    out.append(prov.scale(x, t["ca"], None))
    out.append(prov.grad_input(dy, x, t["ca"], t["sa"], t["da"], t["dm"], t["amc"], t["davg"], t["dmax"], t["amp"]))
    out.append(prov.grad_input(dy, x, t["ca"], None, None, None, None, t["davg"], None, None))
    return out


SCHEDULE_SHAPES = [(3, 37, 9, 11), (2, 300, 3, 5), (1, 5, 40, 41), (2, 1, 1, 1), (4, 64, 1, 33)]


def _input(shape, dtype, layout: str) -> torch.Tensor:
    """``make_input``, or for "offset" an NCHW tensor one element into its storage (not 16-byte
    aligned: the kernels' unvectorised paths)."""
    if layout != "offset":
        return make_input(shape, dtype, layout)
    storage = torch.empty(math.prod(shape) + 1, dtype=dtype)
    x = storage[1:].view(shape)
    x.copy_(make_input(shape, dtype, "nchw"))
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "offset"])
@pytest.mark.parametrize("shape", SCHEDULE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernels_are_right_and_schedule_independent_on_every_device(shape, layout, dtype):
    """On each emulated GPU (SM counts 2, 132, 1, 7: no split up to many), every pass equals the
    "cpu" provider's within the dtype's tolerance, and is the same bit for bit whatever order the
    blocks and threads run in (no race, no order-dependent accumulation: deterministic)."""
    b, c, h, w = shape
    x = _input(shape, dtype, layout)
    dy = make_input(shape, dtype, "nchw", seed=2)
    t = _terms(b, c, h * w, dtype)
    expected = _all_passes(CPU, x, dy, t)
    rtol, atol = TOL[dtype] if dtype != torch.bfloat16 else TOL[torch.float32]
    for device in DEVICES:
        runs = []
        for order, seed in (("forward", 0), ("reverse", 0), ("random", 1), ("random", 2), ("warp_ahead", 0)):
            cuemu.configure(device, order, seed)
            runs.append(_all_passes(EMU, x, dy, t))
        for i, (got, want) in enumerate(zip(runs[0], expected)):
            # Sums in the kernels' accumulation dtype; bf16 outputs are compared at bf16 precision.
            tol = TOL[torch.bfloat16] if got.dtype == torch.bfloat16 else (rtol, atol)
            torch.testing.assert_close(got, want, rtol=tol[0], atol=tol[1], msg=lambda m: f"device {device} pass {i}: {m}")
        for run in runs[1:]:
            for i, (a, ref) in enumerate(zip(run, runs[0])):
                assert torch.equal(a, ref), f"device {device}: pass {i} depends on the schedule"


def _same_under_every_schedule(check, what: str) -> None:
    """Run ``check`` (which asserts its results right and returns them) on every emulated device in
    forward, reverse, random and warp-ahead block/thread order; all runs must agree bit for bit."""
    runs = []
    for device in DEVICES:
        for order, seed in (("forward", 0), ("reverse", 0), ("random", 1), ("warp_ahead", 0)):
            cuemu.configure(device, order, seed)
            runs.append(check())
    for run in runs[1:]:
        for a, ref in zip(run, runs[0]):
            assert torch.equal(a, ref), f"the {what} depends on the schedule"


# Beyond test_extension's cases: weight gradients reduced over several chunks of 8192 products.
GATE_CONV_CASES_CUDA = GATE_CONV_CASES + [(3, 2, 60, 50, 7, 7, 3, 3, True), (4, 1, 1, 5000, 1, 9, 0, 4, False)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", GATE_CONV_CASES_CUDA, ids=gate_conv_case_id)
def test_gate_conv_is_right_and_schedule_independent(case, dtype):
    """csrc/cuda/gate_conv.cu (the "cuda" provider's gate convolutions) against F.conv2d and aten's
    convolution_backward on every emulated device, and bit for bit the same under every schedule:
    the weight gradient's chunked reduction has a fixed order."""
    _same_under_every_schedule(lambda: check_gate_conv(torch.ops.attnfused_cuemu, dtype, case), "gate convolution")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", FC_GATE_CASES, ids=fc_gate_case_id)
def test_fc_gate_is_right_and_schedule_independent(case, dtype):
    """csrc/cuda/fc_gate.cu (the "cuda" provider's "fc" channel gate, forward and backward) against
    autograd through F.linear, on every emulated device, and bit for bit the same under every
    schedule: each sum runs in a fixed order."""
    _same_under_every_schedule(lambda: check_fc_gate(EMU, dtype, case), "fc gate")


def test_fc_gate_bench_compares_the_two_paths():
    """benchmarks/fc_gate_bench.py (a GPU step of gpu_all.sh) on the emulated kernels, untimed: its
    rows hold both sides' times and their outputs agree, so the GPU run cannot fail on its logic."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "fc_gate_bench.py")
    spec = importlib.util.spec_from_file_location("fc_gate_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.run(EMU, torch.device("cpu"), [(3, 1, 40, 5), (2, 2, 70, 33)], timer=lambda fn: (fn(), 1.0)[1])
    assert [(r["B"], r["n"]) for r in rows] == [(3, 1), (2, 2)]
    for r in rows:
        assert r["fc_gate_fwd_ms"] == r["aten_bwd_ms"] == 1.0 and r["max_abs_diff"] < 1e-5, r
    from attnfused.bench.summary import fc_gate_table  # what the GPU run prints and summary.md holds

    assert "| 3 | 1 | 40 | 5 | 1.0000 | 1.0000 | 1.0000 | 1.0000 |" in fc_gate_table(rows)


def test_fc_gate_refuses_bad_arguments():
    check_fc_gate_refuses_bad_arguments(torch.ops.attnfused_cuemu)


def _launches_of(fn, template_args: bool = False) -> dict[str, int]:
    """Kernels ``fn`` launched: name (with its template arguments, or not) -> count."""
    def by_name() -> dict[str, int]:
        out: dict[str, int] = {}
        for name, n in cuemu.kernel_launches().items():
            # "void ns::(anonymous namespace)::kernel<args>(params)" -> "kernel" or "kernel<args>"
            head = name.replace("(anonymous namespace)::", "").removeprefix("void ").split("(")[0]
            base, _, targs = head.partition("<")
            short = base.rsplit("::", 1)[-1] + ("<" + targs if template_args and targs else "")
            out[short] = out.get(short, 0) + n
        return out

    before = by_name()
    fn()
    return {k: v - before.get(k, 0) for k, v in by_name().items() if v != before.get(k, 0)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_pointwise_is_vectorised_where_layouts_allow(dtype):
    """16-byte loads and stores when ``a`` and ``out`` are dense in one layout and aligned (both
    layouts, odd sizes: the last vector is partial); the generic kernel otherwise."""
    shape = (3, 5, 7, 9)
    t = _terms(3, 5, 63, dtype)
    for layout, kernel in (("nchw", "pointwise_vector_kernel"), ("channels_last", "pointwise_vector_kernel"),
                           ("offset", "pointwise_generic_kernel")):
        x = _input(shape, dtype, layout)
        assert _launches_of(lambda: EMU.scale(x, t["ca"], t["sa"])) == {kernel: 1}, layout
    x = _input(shape, dtype, "channels_last")
    dy = make_input(shape, dtype, "nchw", seed=2)  # dx in x's layout from an NCHW dy
    assert _launches_of(lambda: EMU.grad_input(dy, x, t["ca"])) == {"pointwise_generic_kernel": 1}


@pytest.mark.parametrize(
    "shape, layout, pool, kernel",
    [
        ((2, 8, 9, 9), "nchw", "hw", "reduce_rows_kernel<float, float, false, 4>"),  # rows of 81: head + tail
        ((2, 8, 9, 9), "channels_last", "c", "reduce_rows_kernel<float, float, true, 4>"),
        ((2, 8, 9, 9), "channels_last", "hw", "reduce_tile_kernel<float, float, false, 4>"),
        ((2, 6, 9, 9), "channels_last", "hw", "reduce_tile_kernel<float, float, false, 1>"),  # C % 4 != 0
        ((2, 8, 4, 5), "nchw", "c", "reduce_tile_kernel<float, float, true, 4>"),
        ((2, 8, 9, 9), "nchw", "c", "reduce_tile_kernel<float, float, true, 1>"),  # P % 4 != 0
        ((2, 8, 9, 9), "offset", "hw", "reduce_rows_kernel<float, float, false, 1>"),  # misaligned data
    ],
)
def test_reductions_are_vectorised_where_layouts_allow(shape, layout, pool, kernel):
    x = _input(shape, torch.float32, layout)
    fn = (lambda: EMU.pool_hw(x, True)) if pool == "hw" else (lambda: EMU.pool_c(x, None))
    launched = _launches_of(fn, template_args=True)
    assert launched.pop(kernel) == 1 and set(launched) <= {"combine_kernel<float>"}, launched


def test_reductions_split_on_wide_gpus_and_not_on_narrow_ones():
    """The split path (partials + combine kernel) and the single-pass path both run in the tests
    above: one launch on the 1-SM device, two (reduce + combine) on the 132-SM one."""
    x = make_input((2, 16, 20, 20), torch.float32, "nchw")
    launches = {}
    for device in (1, 2):
        cuemu.configure(device)
        before = cuemu.stats()["launches"]
        EMU.pool_hw(x, True)
        launches[device] = cuemu.stats()["launches"] - before
    assert launches == {1: 2, 2: 1}


def test_64bit_offsets():
    """A batch stride past 2**31 elements (the storage is reserved, not touched: a few pages are
    written): every pass reads the second sample at its true offset, as int32 offsets would not.
    (Equal to the dense input's results up to summation order: the dense ``x`` shares ``dy``'s
    strides and gets the vector path, the strided one does not.)"""
    b, c, h, w = 2, 6, 5, 7
    stride_b = (1 << 31) + 4096
    storage = torch.empty(stride_b + c * h * w, dtype=torch.bfloat16)
    x = storage.as_strided((b, c, h, w), (stride_b, h * w, w, 1))
    x.copy_(make_input((b, c, h, w), torch.bfloat16, "nchw"))
    dense = x.contiguous()
    dy = make_input((b, c, h, w), torch.bfloat16, "nchw", seed=2)
    t = _terms(b, c, h * w, torch.bfloat16)
    for prov in (EMU, CPU):
        for i, (got, want) in enumerate(zip(_all_passes(prov, x, dy, t), _all_passes(prov, dense, dy, t))):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"{prov.name}: pass {i} differs with a 2**31 batch stride: {m}")


def _kernel_bytes(fn) -> tuple[int, int]:
    """(bytes read from, bytes written to full-size tensors) by the CUDA kernels ``fn`` launched."""
    before = cuemu.stats()
    fn()
    after = cuemu.stats()
    return after["full_read_bytes"] - before["full_read_bytes"], after["full_write_bytes"] - before["full_write_bytes"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "offset"])
@pytest.mark.parametrize("shape", [(3, 37, 9, 11), (2, 300, 3, 5), (1, 5, 40, 41), (4, 64, 1, 33)],
                         ids=lambda s: "x".join(map(str, s)))
def test_each_pass_touches_each_element_once(shape, layout, dtype):
    """Per pass, the bytes the kernels move to and from full-size tensors, counted: every element
    of ``x`` / ``dy`` read once (twice for the dot passes: dy and x), every element of the output
    written once, on every path (vector heads and tails, tiles, splits on the 132-SM device)."""
    b, c, h, w = shape
    x = _input(shape, dtype, layout)
    dy = make_input(shape, dtype, "nchw", seed=2)
    t = _terms(b, c, h * w, dtype)
    n = x.numel() * x.element_size()
    for device in (1, 2):
        cuemu.configure(device)
        for what, fn, expected in (
            ("pool_hw", lambda: EMU.pool_hw(x, True), (n, 0)),
            ("pool_c", lambda: EMU.pool_c(x, t["ca"]), (n, 0)),
            ("dot_hw", lambda: EMU.dot_hw(dy, x, t["sa"], t["da"], t["dm"], t["amc"]), (2 * n, 0)),
            ("dot_c", lambda: EMU.dot_c(dy, x, t["ca"]), (2 * n, 0)),
            ("scale", lambda: EMU.scale(x, t["ca"], t["sa"]), (n, n)),
            ("grad_input", lambda: EMU.grad_input(dy, x, t["ca"], t["sa"], None, None, None, t["davg"]), (n, n)),
        ):
            assert _kernel_bytes(fn) == expected, f"{what} on device {device}"


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("name", list(TRAFFIC_BLOCKS))
def test_blocks_move_exactly_the_streaming_budget(name, layout):
    """DESIGN.md §5's streaming budget on the CUDA kernels (tests/test_traffic.py checks the Triton
    ones): full-size bytes of a block's forward and backward, counted in the emulator, are exactly
    3 N / 4 N (SE, ECA, spatial) and 4 N / 6 N (CBAM), and no ATen op touches a full-size tensor."""
    m, x = traffic_block(name), traffic_input(layout)
    unit = x.numel() * x.element_size()
    with attnfused.use_backend("cuemu"):
        fwd = {}
        fwd_bytes = sum(_kernel_bytes(lambda: fwd.update(t=count_traffic(m, x, full_numel=x.numel()))))
        y = fwd["t"].result
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
        dy = dy.to(memory_format=torch.channels_last) if layout == "channels_last" else dy
        bwd = {}
        bwd_bytes = sum(_kernel_bytes(lambda: bwd.update(t=count_traffic(y.backward, dy, full_numel=x.numel()))))
    assert fwd["t"].aten_ops == [] and bwd["t"].aten_ops == [], (fwd["t"].aten_ops, bwd["t"].aten_ops)
    assert (fwd_bytes / unit, bwd_bytes / unit) == TRAFFIC_BUDGET[name]


def _asan_runtime() -> list[str]:
    """libasan and libstdc++ of the compiler torch builds extensions with, or [] if it has no ASan."""
    libs = []
    for lib in ("libasan.so", "libstdc++.so"):
        path = subprocess.run(["c++", f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
        if not os.path.isabs(path):
            return []
        libs.append(path)
    return libs


def test_no_out_of_bounds_access_under_address_sanitizer():
    """tests/cuemu/asan_check.py: every pass on every path and the blocks' forward + backward, on
    the emulator built with -fsanitize=address (found: the vector kernel's last, partial vector
    gathered the small terms of elements past the tensor's end)."""
    libs = _asan_runtime()
    if not libs:
        pytest.skip("the C++ compiler has no AddressSanitizer runtime")
    env = dict(os.environ, LD_PRELOAD=" ".join(libs), ASAN_OPTIONS="detect_leaks=0")
    script = os.path.join(os.path.dirname(__file__), "cuemu", "asan_check.py")
    out = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0 and "ASAN-OK" in out.stdout, (out.stdout + out.stderr)[-6000:]


STAGES = [(256, 56), (1024, 14), (2048, 7)]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("block", ["se_max", "eca", "cbam_fc", "spatial7"])
def test_resnet_stage_shapes(block, dtype, layout):
    """tests/test_gpu.py's large shapes at batch 2: the CUDA kernels against the "cpu" provider
    (both accumulate in fp32; they differ in summation order only) and against eager."""
    for c, hw in STAGES:
        m = make_block(block, c, dtype)
        x = make_input((2, c, hw, hw), dtype, layout)
        dy = make_input((2, c, hw, hw), dtype, "nchw", seed=2)
        y_e, dx_e, g_e = run_fwd_bwd(m, x, "cuemu", dy)
        y_c, dx_c, g_c = run_fwd_bwd(m, x, "cpu", dy)
        y_r, dx_r, _ = run_fwd_bwd(m, x, "reference", dy)
        ties = max_tie_mask(m, x)
        assert_close(y_e, y_c, dtype, f"y vs cpu {c}x{hw}")
        assert_close_but_max_ties(dx_e, dx_c, dtype, f"dx vs cpu {c}x{hw}", ties)
        for n in g_c:
            scale = max(1.0, g_c[n].abs().max().item())
            rtol, atol = TOL[dtype]
            torch.testing.assert_close(g_e[n], g_c[n], rtol=rtol, atol=atol * scale, msg=lambda e: f"grad {n}: {e}")
        assert_close(y_e, y_r, dtype, f"y vs eager {c}x{hw}")
        assert_close_but_max_ties(dx_e, dx_r, dtype, f"dx vs eager {c}x{hw}", ties)
        if dtype == torch.float32:
            # In fp32 ``ties`` holds the maxima alone: there dx = dy ca + (the max's gradient, up
            # to ~50 here) often cancels to ~0.1, so its rounding is on the scale of the terms.
            scale = max(1.0, dx_r.abs().max().item())
            rtol, atol = TOL[dtype]
            torch.testing.assert_close(dx_e[ties], dx_r[ties], rtol=rtol, atol=atol * scale,
                                       msg=lambda e: f"dx at the maxima vs eager {c}x{hw}: {e}")
