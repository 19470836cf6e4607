"""Per-block microbenchmarks: eager, torch.compile and each attnfused provider on the same tensors."""

from __future__ import annotations

import statistics
import sys
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch

import attnfused

from .cases import BLOCKS, minimal_bytes
from .timing import peak_mb, take_turns, time_ms


@dataclass
class Impl:
    """One contender: an attnfused backend, optionally wrapped in ``torch.compile(mode=...)``."""

    name: str
    backend: str
    compile_mode: Optional[str] = None


@dataclass
class Row:
    block: str
    batch: int
    channels: int
    height: int
    width: int
    dtype: str
    layout: str
    mode: str  # "fwd" (inference, no_grad) or "fwdbwd" (forward + input and weight gradients)
    impl: str
    ms: Optional[float] = None
    gbs: Optional[float] = None  # minimal bytes (cases.minimal_bytes) / time
    frac_copy: Optional[float] = None  # gbs / measured device copy bandwidth
    speedup_vs_eager: Optional[float] = None
    speedup_vs_compile: Optional[float] = None
    peak_mb: Optional[float] = None  # CUDA only, fwdbwd: peak allocation above the inputs
    error: Optional[str] = None
    extra: dict = field(default_factory=dict)


def default_impls(device: torch.device, providers: list[str], compile_modes: list[str]) -> list[Impl]:
    impls = [Impl("eager", "reference")]
    impls += [Impl(f"compile:{m}", "reference", m) for m in compile_modes]
    impls += [Impl(f"attnfused:{p}", p) for p in providers]
    return impls


def _make_call(m: torch.nn.Module, impl: Impl, x: torch.Tensor, dy: torch.Tensor, mode: str) -> Callable[[], object]:
    target = torch.compile(m, mode=None if impl.compile_mode == "default" else impl.compile_mode) if impl.compile_mode else m
    params = [p for p in m.parameters()]

    if mode == "fwd":
        def call():
            with attnfused.use_backend(impl.backend), torch.no_grad():
                return target(x)
    else:
        xg = x.detach().requires_grad_(True)

        def call():
            with attnfused.use_backend(impl.backend):
                y = target(xg)
                # autograd.grad, not backward(): accumulating into .grad would add a pass over dx.
                return torch.autograd.grad(y, [xg, *params], dy)
    return call


# CPU: a group's contenders take turns, CPU_ROUNDS rounds of CPU_ROUND_S seconds each (the order
# rotating), and a row's time is the median of its rounds' medians. Timed one after another, each for
# a second, the rows of a group took the shared VM's drift with them: SE max's forward at 8 x 1024 x
# 14^2 read 0.73x torch.compile's in one run (benchmarks/results/cpu-2026-12-08-zen3-s22/) and
# 1.0-1.2x with the two timed side by side in one process. A GPU keeps do_bench's one measurement.
CPU_ROUNDS, CPU_ROUND_S = 5, 0.2


def error_text(e: Exception) -> str:
    """A failed contender's report: the exception's type and first line."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def run_group(
    block: str, batch: int, chw: tuple[int, int, int], dtype: torch.dtype, layout: str, mode: str,
    impls: list[Impl], device: torch.device, copy_gbs: float, progress: Callable[[str], None],
) -> list[Row]:
    """All implementations on one (block, shape, dtype, layout, mode), then the speed-ups."""
    c, h, w = chw
    torch.manual_seed(0)
    m = BLOCKS[block](c).to(device, dtype)
    x = torch.randn(batch, c, h, w, device=device, dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    dy = torch.randn_like(x)
    nbytes = minimal_bytes(x.numel(), x.element_size(), mode)
    rows, calls = [], []
    for impl in impls:
        row = Row(block, batch, c, h, w, str(dtype).replace("torch.", ""), layout, mode, impl.name)
        rows.append(row)
        try:
            call = _make_call(m, impl, x, dy, mode)
            call()  # (compiles; a contender that fails here is reported, not fatal to the run)
            calls.append((row, call))
        except Exception as e:
            row.error = error_text(e)
    rounds, per_round = (CPU_ROUNDS, {"min_time_s": CPU_ROUND_S}) if device.type == "cpu" else (1, {})
    times, errors = take_turns([call for _, call in calls], lambda call: time_ms(call, device, **per_round),
                               lambda r: r < rounds)
    for (row, call), t, err in zip(calls, times, errors):
        if err is not None:
            row.error = error_text(err)
            continue
        try:
            row.ms = statistics.median(t)
            row.gbs = nbytes / (row.ms * 1e-3) / 1e9
            row.frac_copy = row.gbs / copy_gbs if copy_gbs else None
            if mode == "fwdbwd":
                row.peak_mb = peak_mb(call, device)
        except Exception as e:
            row.error = error_text(e)
    for row in rows:
        progress(_progress_line(row))
    by = {r.impl: r.ms for r in rows}
    for r in rows:
        if r.ms is None:
            continue
        if by.get("eager"):
            r.speedup_vs_eager = by["eager"] / r.ms
        if by.get("compile:default"):
            r.speedup_vs_compile = by["compile:default"] / r.ms
    return rows


def _progress_line(r: Row) -> str:
    what = f"{r.block} {r.batch}x{r.channels}x{r.height}x{r.width} {r.dtype} {r.layout} {r.mode} {r.impl}"
    if r.error:
        return f"{what}: FAILED {r.error}"
    return f"{what}: {r.ms:.3f} ms, {r.gbs:.1f} GB/s"


def rows_as_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


def stderr_progress(total: int) -> Callable[[str], None]:
    count = [0]

    def say(line: str) -> None:
        count[0] += 1
        where = f"{count[0]}/{total}" if total else f"{count[0]}"
        print(f"[{where}] {line}", file=sys.stderr, flush=True)

    return say
