"""attnfused's seed-compatible modules are drop-in replacements for the source text's classes.

The source classes are not in this repository (policy: no code from the source text is committed);
:mod:`source_text` loads them from the text at test time, and every test here skips if the text is
not on the machine.

For each (source class, attnfused class, constructor arguments):

- ``state_dict``: same keys and shapes; loads both ways with ``strict=True``; the same seed gives
  the same initial weights;
- forward output, ``dx`` and every parameter gradient (matched by name) equal the source's, in fp64
  and fp32, under the ``"triton"`` backend (Triton interpreter on CPU) and the ``"reference"``
  backend, for NCHW and channels_last inputs, on odd shapes (C = 1 where the class allows it,
  H = W = 1, H*W not a power of 2, H or W = 1, batch 1 to 3);
- ours keeps the input's memory format for ``y``, ``dx`` and ``x.grad``.

Plus: max ties, NaN and +-Inf inputs; views that are neither NCHW nor channels_last (and dy in
another layout than x); constructor-argument refusals; ECA's adaptive kernel size
(``attnfused.modules._args.eca_kernel_size`` and the modules built from it) equals the kernel size
the source's ``ECABlock`` builds, for every C in 1..2048; the loader itself.

Known library mismatches are ``xfail(strict=True)`` with the reason spelled out (KNOWN_MISMATCHES,
test_numpy_integer_channels): fixing the library makes them XPASS, i.e. fail, so the marker goes.

The Triton interpreter costs tens of ms per launch plus ~0.5 ms per program instance (C = 54 in
NCHW is ~10x a C = 6 case), so tensors stay tiny: the file runs in about 1.5 minutes on 2 cores.
"""

from __future__ import annotations

import os
import zlib

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable, Dict, Sequence, Tuple  # noqa: E402

import pytest  # noqa: E402

import attnfused  # noqa: E402
from attnfused.modules._args import eca_kernel_size  # noqa: E402

try:  # pytest's default "prepend" import mode puts tests/ on sys.path
    from source_text import (
        EXPECTED_CLASSES, TAB_SIZE, SourceTextMissing, extract_class_blocks, load_source_classes, source_files,
    )
except ImportError:  # tests/ made a package
    from tests.source_text import (
        EXPECTED_CLASSES, TAB_SIZE, SourceTextMissing, extract_class_blocks, load_source_classes, source_files,
    )


# --------------------------------------------------------------------------------------------
# Source classes (module-level fixture: a missing source text skips every test of this file on a
# developer's machine; under CI, which lays shared/ beside the clone, it fails: parity must run)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source() -> Dict[str, type]:
    try:
        classes = load_source_classes()
    except SourceTextMissing as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the source-text parity tests, but: {e}")
        pytest.skip(f"source text not available: {e}")
    missing = [n for n in EXPECTED_CLASSES if n not in classes]
    assert not missing, f"source text lacks {missing}; found {sorted(classes)}"
    return classes


def test_loader_tab_expansion_is_needed(source) -> None:
    """The post mixes one tab-indented line into a space-indented class: as written it does not
    compile (TabError), with 8-column tabs neither (IndentationError); 4-column tabs it does."""
    blocks = {n: ln for path in source_files() for n, _, ln in extract_class_blocks(path.read_text("utf-8"))}
    assert set(EXPECTED_CLASSES) <= set(blocks)
    tabbed = [n for n, ln in blocks.items() if any("\t" in x for x in ln)]
    assert tabbed, "no tab-indented line any more: the TAB_SIZE workaround in source_text.py can go"
    for name in tabbed:
        text = "\n".join(blocks[name])
        with pytest.raises(SyntaxError):  # TabError / IndentationError are SyntaxErrors
            compile(text, name, "exec")
        compile(text.expandtabs(TAB_SIZE), name, "exec")


def test_loader_missing_text_is_reported(tmp_path) -> None:
    with pytest.raises(SourceTextMissing, match="does not exist"):
        load_source_classes(tmp_path / "nowhere")
    with pytest.raises(SourceTextMissing, match=r"no \*\.txt"):
        load_source_classes(tmp_path)


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

# (B, H, W): batch 1..3, H = W = 1, H*W not a power of 2 (35, 7, 9), W = 1 and H = 1 (special
# cases of the [B, C, H*W] view). fp64 runs all of them, fp32 the first two (FP32_SHAPES).
SHAPES: Tuple[Tuple[int, int, int], ...] = ((1, 1, 1), (3, 5, 7), (1, 7, 1), (2, 1, 9))
FP32_SHAPES = SHAPES[:2]
# C = 54 costs ~10x more interpreter time per launch (NCHW tiles of 4 channels): batch 1 there.
WIDE_SHAPES: Tuple[Tuple[int, int, int], ...] = ((1, 1, 1), (1, 5, 7), (2, 1, 9))
# Aliases share their implementation with a fully tested class: one shape is enough.
ALIAS_SHAPES: Tuple[Tuple[int, int, int], ...] = ((3, 5, 7),)
LAYOUTS = ("nchw", "channels_last")
BACKENDS = ("triton", "reference")

# (rtol, atol). fp64: both sides compute in fp64; only summation order differs (a few ulp).
# fp32: rtol 1e-5 and atol 1e-6 *times max(1, max|expected|)*. The scaling is the one loosening,
# and here is why: weight gradients are sums (over P, then B, then the hidden units) whose terms
# cancel, so an element's rounding error scales with the tensor's largest terms, not with the
# element. Example: SEBlock("max", 54, 9), x [3, 54, 5, 7]: max|dW1| = 16; the source's own fp32
# dW1 is 2.9e-6 off fp64, and the source run on NCHW vs channels_last input differs from itself by
# 3.8e-6 at an element of size 0.1 (rel 2.3e-5), which a plain rtol 1e-5 / atol 1e-6 rejects.
TOL = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-5, 1e-6)}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, equal_nan: bool = False) -> None:
    rtol, atol = TOL[expected.dtype]
    finite = expected[torch.isfinite(expected)]
    if expected.dtype == torch.float32 and finite.numel():
        atol *= max(1.0, finite.abs().max().item())
    torch.testing.assert_close(
        actual, expected, rtol=rtol, atol=atol, equal_nan=equal_nan, msg=lambda m: f"{what}: {m}"
    )


@dataclass(frozen=True)
class Case:
    id: str
    source_name: str
    ours: Callable[..., torch.nn.Module]
    args: Tuple[Any, ...] = ()
    kwargs: Dict[str, Any] = field(default_factory=dict)
    channels: Sequence[int] = (6,)
    shapes: Sequence[Tuple[int, int, int]] = SHAPES

    def build_source(self, source: Dict[str, type]) -> torch.nn.Module:
        return source[self.source_name](*self.args, **self.kwargs)

    def build_ours(self) -> torch.nn.Module:
        return self.ours(*self.args, **self.kwargs)


def _cases() -> Tuple[Case, ...]:
    A = attnfused
    cases = [
        # SE: avg / max pooling; hidden width C // ratio (54 // 9 = 6), C = 1 with ratio 1.
        Case("se-avg-6-3", "SEBlock", A.SEBlock, ("avg", 6, 3)),
        Case("se-max-54-9-kw", "SEBlock", A.SEBlock, (), dict(mode="max", channels=54, ratio=9), (54,), WIDE_SHAPES),
        Case("se-max-6-4", "SEBlock", A.SEBlock, ("max", 6, 4)),  # 6 // 4 = 1 hidden unit
        Case("se-avg-1-1", "SEBlock", A.SEBlock, ("avg", 1, 1), channels=(1,)),
        # ECA: k = 1 (C = 6 and C = 1), k = 3 (C = 54), k larger than C (padding beyond the edges).
        Case("eca-6", "ECABlock", A.ECABlock, (6,)),
        Case("eca-54-kw", "ECABlock", A.ECABlock, (54,), dict(gamma=2, b=1), (54,), WIDE_SHAPES),
        Case("eca-1", "ECABlock", A.ECABlock, (1,), channels=(1,)),
        Case("eca-6-k3", "ECABlock", A.ECABlock, (6, 1, 1)),  # k = 3
        Case("eca-3-k5", "ECABlock", A.ECABlock, (3,), dict(gamma=1, b=4), (3,)),  # k = 5 > C
        Case("eca-2-k7", "ECABlock", A.ECABlock, (2,), dict(gamma=1, b=6), (2,)),  # k = 7 > C
        # CBAM channel attention.
        Case("ca-fc-6-2", "Channel_Attention_Module_FC", A.ChannelAttentionFC, (6, 2)),
        Case("ca-fc-1-1-kw", "Channel_Attention_Module_FC", A.ChannelAttentionFC, (),
             dict(channels=1, ratio=1), (1,)),
        Case("ca-fc-alias", "Channel_Attention_Module_FC", A.Channel_Attention_Module_FC, (6, 3),
             shapes=ALIAS_SHAPES),
        Case("ca-conv-6", "Channel_Attention_Module_Conv", A.ChannelAttentionConv, (6,), dict(gamma=2, b=1)),
        Case("ca-conv-6-k3", "Channel_Attention_Module_Conv", A.ChannelAttentionConv, (6, 1, 1)),
        Case("ca-conv-1", "Channel_Attention_Module_Conv", A.ChannelAttentionConv, (1,), channels=(1,)),
        Case("ca-conv-3-k5-alias", "Channel_Attention_Module_Conv", A.Channel_Attention_Module_Conv, (3,),
             dict(gamma=1, b=4), (3,), ALIAS_SHAPES),
        # CBAM spatial attention (no channel argument: C = 1 and C = 6).
        *(Case(f"sa-{k}", "Spatial_Attention_Module", A.SpatialAttention, (k,), channels=(1, 6))
          for k in (3, 5, 7)),
        Case("sa-5-alias-kw", "Spatial_Attention_Module", A.Spatial_Attention_Module, (), dict(k=5), (6,),
             ALIAS_SHAPES),
        # Full CBAM.
        Case("cbam-fc-5", "CBAMBlock", A.CBAMBlock, ("FC", 5), dict(channels=6, ratio=3)),
        Case("cbam-fc-3-pos", "CBAMBlock", A.CBAMBlock, ("FC", 3, 6, 2)),
        Case("cbam-conv-3", "CBAMBlock", A.CBAMBlock, ("Conv", 3), dict(channels=6, gamma=2, b=1)),
        Case("cbam-conv-7-k3", "CBAMBlock", A.CBAMBlock, ("Conv", 7), dict(channels=6, gamma=1, b=1)),
        Case("cbam-conv-5-c1", "CBAMBlock", A.CBAMBlock, ("Conv", 5), dict(channels=1, gamma=2, b=1), (1,)),
        Case("cbam-fc-7-c1", "CBAMBlock", A.CBAMBlock, (), dict(channel_attention_mode="FC",
             spatial_attention_kernel_size=7, channels=1, ratio=1), (1,)),
    ]
    return tuple(cases)


CASES = _cases()
CASE_IDS = [c.id for c in CASES]
SEED = 20240611


def _pair(case: Case, source: Dict[str, type]) -> Tuple[torch.nn.Module, torch.nn.Module]:
    """(source module built with SEED, ours with the source's weights loaded strictly)."""
    torch.manual_seed(SEED)
    src = case.build_source(source)
    torch.manual_seed(SEED + 1)  # other weights, so the load is what makes them equal
    ours = case.build_ours()
    ours.load_state_dict(src.state_dict(), strict=True)
    return src, ours


# --------------------------------------------------------------------------------------------
# state_dict compatibility
# --------------------------------------------------------------------------------------------


def _shapes(sd: Dict[str, torch.Tensor]) -> Dict[str, Tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_state_dict_keys_and_shapes(case: Case, source) -> None:
    src, ours = case.build_source(source), case.build_ours()
    assert _shapes(ours.state_dict()) == _shapes(src.state_dict())
    assert list(ours.state_dict()) == list(src.state_dict())  # same order too
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in src.named_parameters()]
    assert {k: v.dtype for k, v in ours.state_dict().items()} == {k: v.dtype for k, v in src.state_dict().items()}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_state_dict_loads_both_ways(case: Case, source) -> None:
    # source -> ours
    torch.manual_seed(1)
    src = case.build_source(source)
    torch.manual_seed(2)
    ours = case.build_ours()
    ours.load_state_dict(src.state_dict(), strict=True)
    for k, v in src.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    # ours -> source
    torch.manual_seed(3)
    ours = case.build_ours()
    torch.manual_seed(4)
    src = case.build_source(source)
    src.load_state_dict(ours.state_dict(), strict=True)
    for k, v in ours.state_dict().items():
        assert torch.equal(src.state_dict()[k], v), k
    # and the loaded source module computes what ours computes
    x = torch.randn(2, case.channels[0], 3, 5, dtype=torch.float64)
    with attnfused.use_backend("reference"):
        torch.testing.assert_close(ours.double()(x), src.double()(x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_same_seed_same_initial_weights(case: Case, source) -> None:
    """Seed compatibility: the same seed draws the same initial weights (same layers, same order)."""
    torch.manual_seed(SEED)
    src = case.build_source(source)
    torch.manual_seed(SEED)
    ours = case.build_ours()
    for k, v in src.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k


# --------------------------------------------------------------------------------------------
# Forward and backward parity
# --------------------------------------------------------------------------------------------


def _memory_format(layout: str) -> torch.memory_format:
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def _run(module: torch.nn.Module, x0: torch.Tensor, dy: torch.Tensor, keep_strides: bool = False):
    """(y, raw dx as autograd produced it, x.grad, {param name: grad}).

    ``keep_strides``: use ``x0``'s storage and strides as they are (for non-dense views), instead of
    a fresh copy in ``x0``'s memory format.
    """
    x = x0.detach() if keep_strides else x0.detach().clone(memory_format=torch.preserve_format)
    x.requires_grad_(True)
    module.zero_grad(set_to_none=True)
    raw = []
    x.register_hook(lambda g: raw.append(g))
    y = module(x)
    y.backward(dy)
    assert len(raw) == 1
    grads = {n: p.grad for n, p in module.named_parameters()}
    return y.detach(), raw[0], x.grad, grads


def _all_params():
    for case in CASES:
        for dtype, dname in ((torch.float64, "fp64"), (torch.float32, "fp32")):
            for c in case.channels:
                for b, h, w in case.shapes:
                    if dtype == torch.float32 and case.shapes is SHAPES and (b, h, w) not in FP32_SHAPES:
                        continue
                    yield pytest.param(case, (b, c, h, w), dtype, id=f"{case.id}-{b}x{c}x{h}x{w}-{dname}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case,shape,dtype", list(_all_params()))
def test_forward_backward_parity(case: Case, shape, backend: str, dtype: torch.dtype, layout: str, source) -> None:
    src, ours = _pair(case, source)
    src, ours = src.to(dtype), ours.to(dtype)
    fmt = _memory_format(layout)
    gen = torch.Generator().manual_seed(zlib.crc32(f"{case.id}{shape}".encode()))  # stable across runs
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).contiguous(memory_format=fmt)
    dy = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).contiguous(memory_format=fmt)

    ys, dxs, xgs, gs = _run(src, x, dy)
    with attnfused.use_backend(backend):
        yo, dxo, xgo, go = _run(ours, x, dy)

    assert_close(yo, ys, "forward")
    assert_close(dxo, dxs, "dx")
    assert_close(xgo, xgs, "x.grad")
    assert set(go) == set(gs)
    for name in gs:
        assert go[name] is not None, f"no gradient for {name}"
        assert go[name].dtype == gs[name].dtype == dtype
        assert_close(go[name], gs[name], f"d {name}")

    # Layout: ours keeps the input's memory format for y, the raw dx and x.grad.
    assert yo.dtype == dxo.dtype == dtype
    for what, t in (("y", yo), ("dx", dxo), ("x.grad", xgo)):
        assert t.is_contiguous(memory_format=fmt), f"{what} is not {layout}: strides {t.stride()} for {tuple(t.shape)}"
        assert t.stride() == x.stride(), f"{what} strides {t.stride()} != x strides {x.stride()}"


def test_forward_only_no_grad(source) -> None:
    """Inference path (no autograd graph) on both backends equals the source, channels_last."""
    for case in (c for c in CASES if c.id in ("se-max-6-4", "eca-54-kw", "cbam-fc-5", "cbam-conv-7-k3")):
        src, ours = _pair(case, source)
        x = torch.randn(3, case.channels[0], 5, 7).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            ys = src(x)
            for backend in BACKENDS:
                with attnfused.use_backend(backend):
                    yo = ours(x)
                assert_close(yo, ys, f"{case.id} {backend}")
                assert yo.is_contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------------------------
# Special values and other strides
# --------------------------------------------------------------------------------------------

SPECIAL_CASES = tuple(c for c in CASES if c.id in (
    "se-max-6-4", "ca-fc-6-2", "ca-conv-6-k3", "sa-3", "cbam-fc-5", "cbam-conv-7-k3"))


def _special_input(kind: str, c: int, fmt: torch.memory_format) -> torch.Tensor:
    gen = torch.Generator().manual_seed(zlib.crc32(kind.encode()))
    if kind == "ties":
        # post-ReLU-like integers: many exact ties in every max (over H*W and over C), whole
        # channels and whole pixels of zeros; one sample entirely zero.
        x = torch.randint(-2, 3, (3, c, 3, 5), generator=gen).clamp_min(0).double()
        x[1] = 0
    else:
        x = torch.randn(3, c, 3, 5, generator=gen, dtype=torch.float64)
        x[0, c // 2, 1, 2] = float("nan") if kind == "nan" else float("inf")
        x[2, 0, 0, 0] = float("-inf") if kind == "inf" else x[2, 0, 0, 0]
    return x.contiguous(memory_format=fmt)


# Known mismatches, (case id, kind, backend) -> reason. xfail(strict=True): when the library is
# fixed these XPASS and fail, so the entry gets removed.
KNOWN_MISMATCHES: Dict[Tuple[str, str, str], str] = {}


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # interpreter: inf * 0
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ("ties", "nan", "inf"))
@pytest.mark.parametrize("case", SPECIAL_CASES, ids=[c.id for c in SPECIAL_CASES])
def test_special_values_parity(case: Case, kind: str, backend: str, layout: str, source, request) -> None:
    """Max ties (gradient to the same, first maximal, index as eager), NaN and +-Inf propagate as
    in the source (same NaN positions in y, dx and the weight gradients)."""
    reason = KNOWN_MISMATCHES.get((case.id, kind, backend))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    src, ours = _pair(case, source)
    src, ours = src.double(), ours.double()
    x = _special_input(kind, case.channels[0], _memory_format(layout))
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ys, dxs, _, gs = _run(src, x, dy)
    with attnfused.use_backend(backend):
        yo, dxo, _, go = _run(ours, x, dy)
    assert_close(yo, ys, "forward", equal_nan=True)
    assert_close(dxo, dxs, "dx", equal_nan=True)
    for name in gs:
        assert_close(go[name], gs[name], f"d {name}", equal_nan=True)


def _strided_views(c: int) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """(x, dy) views with strides that are neither NCHW nor channels_last."""
    g = torch.Generator().manual_seed(11)
    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)
    return {
        "hw-transposed": (r(2, c, 7, 5).transpose(2, 3), r(2, c, 7, 5).transpose(2, 3)),
        "channel-slice": (r(2, 2 * c, 5, 7)[:, ::2], r(2, 2 * c, 5, 7)[:, 1::2]),
        "batch-slice": (r(4, c, 5, 7)[::2], r(4, c, 5, 7)[1::2]),
        "cl-dy-nchw-x": (r(2, c, 5, 7).contiguous(memory_format=torch.channels_last), r(2, c, 5, 7)),
        "expanded-dy": (r(2, c, 5, 7), r(1, 1, 1, 1).expand(2, c, 5, 7)),
    }


STRIDE_KINDS = ("hw-transposed", "channel-slice", "batch-slice", "cl-dy-nchw-x", "expanded-dy")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", STRIDE_KINDS)
@pytest.mark.parametrize("case", [c for c in CASES if c.id in ("se-max-6-4", "sa-3", "cbam-conv-7-k3")],
                         ids=lambda c: c.id)
def test_other_strides_parity(case: Case, kind: str, backend: str, source) -> None:
    """Non-NCHW/channels_last views of x and dy (and a dy whose layout differs from x's) give the
    source's values; y is a dense tensor of x's shape."""
    src, ours = _pair(case, source)
    src, ours = src.double(), ours.double()
    x, dy = _strided_views(case.channels[0])[kind]
    ys, dxs, _, gs = _run(src, x, dy, keep_strides=True)
    with attnfused.use_backend(backend):
        yo, dxo, _, go = _run(ours, x, dy, keep_strides=True)
    assert_close(yo, ys, "forward")
    assert_close(dxo, dxs, "dx")
    for name in gs:
        assert_close(go[name], gs[name], f"d {name}")
    assert yo.shape == x.shape and dxo.shape == x.shape


# --------------------------------------------------------------------------------------------
# Constructor arguments
# --------------------------------------------------------------------------------------------


def test_same_constructor_errors_for_bad_mode(source) -> None:
    """Where the source refuses an argument (assert), ours refuses it too (ValueError, earlier)."""
    with pytest.raises(AssertionError):
        source["Spatial_Attention_Module"](9)
    with pytest.raises(ValueError, match="kernel_size"):
        attnfused.Spatial_Attention_Module(9)
    with pytest.raises(AssertionError):
        source["CBAMBlock"]("FC", 3, channels=6)  # no ratio
    with pytest.raises(ValueError, match="ratio"):
        attnfused.CBAMBlock("FC", 3, channels=6)
    with pytest.raises(AssertionError):
        source["CBAMBlock"]("Conv", 3, channels=6, gamma=2)  # no b
    with pytest.raises(ValueError, match="b"):
        attnfused.CBAMBlock("Conv", 3, channels=6, gamma=2)
    with pytest.raises(AssertionError):
        source["CBAMBlock"]("MLP", 3, channels=6, ratio=2)
    with pytest.raises(ValueError, match="channel_attention_mode"):
        attnfused.CBAMBlock("MLP", 3, channels=6, ratio=2)


def test_numpy_integer_channels(source) -> None:
    np = pytest.importorskip("numpy")
    c = np.int64(6)
    for sname, ours_cls, args in (("SEBlock", attnfused.SEBlock, ("avg", c, 3)),
                                  ("ECABlock", attnfused.ECABlock, (c,)),
                                  ("Channel_Attention_Module_FC", attnfused.ChannelAttentionFC, (c, 2))):
        want = _shapes(source[sname](*args).state_dict())
        assert _shapes(ours_cls(*args).state_dict()) == want


# --------------------------------------------------------------------------------------------
# ECA kernel size
# --------------------------------------------------------------------------------------------

ECA_CHANNELS = range(1, 2049)
# The brief's (gamma, b) pairs, plus non-integers and signs the source's ``abs`` handles.
ECA_GAMMA_B = ((2, 1), (3, 2), (1, 0), (1.5, 0.5), (-2, 1), (2, -3))


@pytest.mark.parametrize("gamma,b", ECA_GAMMA_B, ids=[f"gamma{g}-b{b}" for g, b in ECA_GAMMA_B])
def test_eca_kernel_size_matches_source(gamma, b, source) -> None:
    """For every C in 1..2048 the source ECABlock is built (about 0.15 ms each) and its weight read."""
    eca = source["ECABlock"]
    bad = []
    for c in ECA_CHANNELS:
        k_src = eca(c, gamma=gamma, b=b).conv.weight.shape[-1]
        k_ours = eca_kernel_size(c, gamma, b)
        if k_ours != k_src:
            bad.append((c, k_src, k_ours))
    assert not bad, f"(C, source k, ours k) differ: {bad[:20]} ({len(bad)} in all)"


@pytest.mark.parametrize("gamma,b", ECA_GAMMA_B[:3])
def test_eca_modules_build_source_kernel(gamma, b, source) -> None:
    """The modules (ECA, CBAM's conv channel attention) build the source's conv shapes."""
    for c in list(range(1, 70)) + [127, 128, 129, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025, 2047, 2048]:
        want = tuple(source["ECABlock"](c, gamma, b).conv.weight.shape)
        assert tuple(attnfused.ECABlock(c, gamma, b).conv.weight.shape) == want, c
        assert tuple(source["Channel_Attention_Module_Conv"](c, gamma, b).conv.weight.shape) == want, c
        assert tuple(attnfused.ChannelAttentionConv(c, gamma, b).conv.weight.shape) == want, c
        src_pad = source["ECABlock"](c, gamma, b).conv.padding
        assert attnfused.ECABlock(c, gamma, b).conv.padding == src_pad, c
