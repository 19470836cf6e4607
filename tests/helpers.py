"""Shared test helpers: device/dtype matrix, block factories, forward+backward runner, tolerances."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

import attnfused

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# The CPU runs the Triton interpreter (fp32/fp64); a GPU adds the half types.
DTYPES = [torch.float32, torch.float64] + ([torch.float16, torch.bfloat16] if DEVICE.type == "cuda" else [])
ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# The fused providers under test on this machine: Triton (interpreted on CPU), the compiled
# extension's provider for the device, and without a GPU the CUDA kernels on the emulator
# (tests/cuemu, "cuemu"). The extension is listed even when it was not built, so its tests fail
# loudly instead of vanishing (tests/test_extension.py says why); so is the emulator.
EXT = "cuda" if DEVICE.type == "cuda" else "cpu"
FUSED = ["triton", EXT] + ([] if DEVICE.type == "cuda" else ["cuemu"])


def dtypes_for(provider: str) -> list[torch.dtype]:
    """Dtypes a provider is tested in: the Triton interpreter's bf16 arithmetic is wrong (DESIGN.md
    §7), so interpreted Triton gets fp32/fp64; compiled providers get all four."""
    return DTYPES if provider == "triton" else ALL_DTYPES


FUSED_DTYPES = [(p, d) for p in FUSED for d in dtypes_for(p)]
LAYOUTS = ["nchw", "channels_last"]

# (rtol, atol) vs the reference in the same dtype: fp32/fp64 differ only by summation order;
# the half types by rounding of the gate and of x * ca (the kernels keep them in fp32).
TOL = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 5e-2),
}


def _ratio(c: int) -> int:
    return 2 if c >= 2 else 1


# name -> factory(C) building a module with deterministic weights.
BLOCKS: dict[str, Callable[[int], nn.Module]] = {
    "se_avg": lambda c: attnfused.SEBlock("avg", c, _ratio(c)),
    "se_max": lambda c: attnfused.SEBlock("max", c, _ratio(c)),
    "eca": lambda c: attnfused.ECABlock(c),
    "ca_fc": lambda c: attnfused.ChannelAttentionFC(c, _ratio(c)),
    "ca_conv": lambda c: attnfused.ChannelAttentionConv(c, gamma=1, b=1),
    "spatial3": lambda c: attnfused.SpatialAttention(3),
    "spatial7": lambda c: attnfused.SpatialAttention(7),
    "cbam_fc": lambda c: attnfused.CBAMBlock("FC", 7, channels=c, ratio=_ratio(c)),
    "cbam_conv": lambda c: attnfused.CBAMBlock("Conv", 3, channels=c, gamma=1, b=1),
}


def make_block(name: str, c: int, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = BLOCKS[name](c).to(DEVICE, dtype)
    # Default init leaves many gate logits near 0; scale weights up so the gate's nonlinearity and
    # the max paths matter in the comparison.
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)
    return m


def make_input(shape, dtype: torch.dtype, layout: str, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(DEVICE, dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    return x


def run_fwd_bwd(m: nn.Module, x: torch.Tensor, backend: str, dy: torch.Tensor):
    """(y, dx, {param name: grad}) of ``m`` on ``x`` under ``backend``."""
    x = x.detach().clone().requires_grad_(True)
    m.zero_grad(set_to_none=True)
    with attnfused.use_backend(backend):
        y = m(x)
        y.backward(dy)
    return y.detach(), x.grad, {n: p.grad for n, p in m.named_parameters()}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def max_tie_mask(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Where a max gradient may land in one implementation and not in another, for ``m`` on ``x``
    in fp16/bf16: elements within rounding of their channel's maximum over H*W (of ``x``), or of
    their pixel's maximum over C (of ``x1``, the channel stage's output when ``m`` has one). With 8
    or 11 bits of mantissa such near-ties are common, and eager's half-precision gate and the
    kernels' fp32 gate round ``x1 = x * ca`` apart, so the two pick different winners there (seen
    at 8x256x56x56 bf16: ~1e-4 of dx, off by up to 7 where two channels of x1 both read 2.5)."""
    rel = {torch.bfloat16: 2.0**-6, torch.float16: 2.0**-9}.get(x.dtype, 0.0)

    def near_max(t: torch.Tensor, dims) -> torch.Tensor:
        top = t.amax(dim=dims, keepdim=True)
        return t >= top - rel * top.abs()

    with torch.no_grad(), attnfused.use_backend("reference"):
        stage = getattr(m, "channel_attention_block", None)
        x1 = (stage(x) if stage is not None else x).float()
    return near_max(x.float(), (2, 3)) | near_max(x1, 1)


def assert_close_but_max_ties(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str, ties: torch.Tensor
) -> None:
    """``assert_close``, except that elements in ``ties`` (:func:`max_tie_mask`) may differ, at most
    1% of them. A max gradient sent to a wrong element still fails, unless that element is itself
    within rounding of the maximum; so does any error away from the maxima."""
    rtol, atol = TOL[dtype]
    bad = ~torch.isclose(actual.float(), expected.float(), rtol=rtol, atol=atol)
    unexplained = bad & ~ties
    assert not unexplained.any(), (
        f"{what}: {unexplained.sum().item()} elements differ away from any max tie; largest difference "
        f"{(actual.float() - expected.float())[unexplained].abs().max().item():.3g}"
    )
    assert bad.float().mean().item() <= 1e-2, f"{what}: {bad.sum().item()} of {bad.numel()} elements differ at ties"


def write_fake_caches(root, caches: dict) -> None:
    """A fake sysfs cpu0/cache tree under ``root``: ``{"index2": ("2", "Unified", "1024K"), ...}``
    gives each index its level, type and size files (attnfused/_machine.py reads them)."""
    for index, values in caches.items():
        (root / index).mkdir(parents=True)
        for name, value in zip(("level", "type", "size"), values):
            (root / index / name).write_text(value + "\n")
