"""End to end: SE-, ECA- and CBAM-ResNet-50 beside plain ResNet-50, eager vs attnfused vs compiled.

The attention block sits on each bottleneck's residual branch after its last BatchNorm, before the
addition (as in the SE, ECA and CBAM papers): ``bn3`` becomes ``Sequential(bn3, block)``. Needs
torchvision (the ``bench`` extra). The figure that matters: how much of the blocks' overhead over
plain ResNet-50 attnfused removes, ``1 - (t_fused - t_plain) / (t_eager - t_plain)``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
from torch import nn

import attnfused

from .micro import error_text
from .timing import peak_mb, take_turns

ATTENTION: dict[str, Optional[Callable[[int], nn.Module]]] = {
    "plain": None,
    "se": lambda c: attnfused.SEBlock("avg", c, 16),
    "eca": lambda c: attnfused.ECABlock(c),
    "cbam": lambda c: attnfused.CBAMBlock("FC", 7, channels=c, ratio=16),
}


def resnet50_with(attention: str) -> nn.Module:
    """torchvision ResNet-50 (random weights) with ``attention`` in every bottleneck."""
    from torchvision.models import resnet50

    model = resnet50(weights=None)
    make = ATTENTION[attention]
    if make is not None:
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            for blk in layer:
                blk.bn3 = nn.Sequential(blk.bn3, make(blk.bn3.num_features))
    return model


@dataclass
class E2ERow:
    model: str
    impl: str  # eager | attnfused | compile | compile+attnfused
    mode: str  # train | infer
    precision: str  # fp32 | bf16-autocast
    batch: int
    image: int
    ms: Optional[float] = None  # median over the rounds
    ms_iqr: Optional[float] = None  # 75th - 25th percentile over the rounds
    rounds: int = 0
    images_per_s: Optional[float] = None
    peak_mb: Optional[float] = None  # CUDA: one step's peak above the memory allocated before it
    overhead_removed: Optional[float] = None  # vs eager, relative to plain ResNet-50
    overhead_note: Optional[str] = None  # why overhead_removed is None though both baselines ran
    error: Optional[str] = None


# impl -> (attnfused backend, compile?)
IMPLS = {
    "eager": ("reference", False),
    "attnfused": ("auto", False),
    "compile": ("reference", True),
    "compile+attnfused": ("auto", True),
}

MIN_ROUNDS, MAX_ROUNDS, MIN_TIME_S = 5, 20, 10.0


def _step_fn(model: nn.Module, x: torch.Tensor, target: torch.Tensor, mode: str, precision: str, backend: str):
    device_type = x.device.type
    amp = torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16-autocast")
    if mode == "infer":
        model.eval()

        def step():
            with attnfused.use_backend(backend), torch.no_grad(), amp:
                return model(x)
        return step
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        with attnfused.use_backend(backend):
            with amp:
                loss = nn.functional.cross_entropy(model(x), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss
    return step


def _timed_step(step: Callable[[], object], device: torch.device) -> float:
    """One step's wall time in ms, the device idle before and after it (a step is 10s-1000s of ms,
    so the synchronisations cost nothing that matters)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def run(
    device: torch.device, models: list[str], impls: list[str], modes: list[str], precisions: list[str],
    batch: int, image: int, progress: Callable[[str], None], deadline: Optional[float] = None,
    min_time_s: float = MIN_TIME_S,
) -> list[dict]:
    """All (precision, mode, model, impl) rows.

    The rows of one (precision, mode) are timed together: each is built and warmed up (compiled),
    then every round runs one step of each row, in an order that rotates from round to round, for
    at least MIN_ROUNDS rounds and ``min_time_s`` seconds (at most MAX_ROUNDS). A row's time is the
    median of its steps. Timed one after another, rows took a machine's drift with them: on a shared
    2-core VM SE-ResNet-50 with attnfused came out faster than plain ResNet-50, "562%" of the
    blocks' overhead removed (benchmarks/results/cpu-2026-12-08-zen3-s22/e2e-sequential);
    interleaved, every row sees the same conditions and the overhead over plain ResNet-50 compares
    like with like. All of a group's models stay resident meanwhile (14 ResNet-50s with optimizer
    state at most: ~4 GB). Rows not started by ``deadline`` (monotonic s) are reported with error
    "skipped: time budget"; past it, no new round starts."""
    rows: list[E2ERow] = []
    for precision in precisions:
        for mode in modes:
            group = [E2ERow(name, impl, mode, precision, batch, image)
                     for name in models for impl in (impls if name != "plain" else _plain_impls(impls))]
            rows += group
            steps: list[tuple[E2ERow, Callable[[], object]]] = []
            for row in group:
                if deadline is not None and time.monotonic() > deadline:
                    row.error = "skipped: time budget"
                    continue
                backend, compiled = IMPLS[row.impl]
                try:
                    torch.manual_seed(0)
                    model = resnet50_with(row.model).to(device).to(memory_format=torch.channels_last)
                    x = torch.randn(batch, 3, image, image, device=device).to(memory_format=torch.channels_last)
                    target = torch.randint(0, 1000, (batch,), device=device)
                    step = _step_fn(torch.compile(model) if compiled else model, x, target, mode, precision, backend)
                    for _ in range(2):  # (compiles, autotunes, fills the allocator's caches)
                        _timed_step(step, device)
                    row.peak_mb = peak_mb(step, device)  # (the other rows' models stay resident)
                    steps.append((row, step))
                except Exception as e:
                    row.error = error_text(e)
                    progress(f"e2e {row.model} {row.impl} {mode} {precision}: {row.error}")
            start = time.perf_counter()

            def another_round(r: int) -> bool:
                if r >= MAX_ROUNDS or (r >= MIN_ROUNDS and time.perf_counter() - start >= min_time_s):
                    return False
                return r == 0 or deadline is None or time.monotonic() <= deadline

            times, errors = take_turns([step for _, step in steps], lambda step: _timed_step(step, device),
                                       another_round)
            for (row, _), t, err in zip(steps, times, errors):
                if err is not None:
                    row.error = error_text(err)
                if row.error is None and t:
                    q = statistics.quantiles(t, n=4, method="inclusive") if len(t) > 1 else [t[0]] * 3
                    row.ms, row.ms_iqr, row.rounds = q[1], q[2] - q[0], len(t)
                    row.images_per_s = batch / (row.ms * 1e-3)
                progress(f"e2e {row.model} {row.impl} {mode} {precision} b{batch} {image}px: "
                         + (row.error or f"{row.ms:.1f} ms (IQR {row.ms_iqr:.1f}, {row.rounds} steps), "
                                         f"{row.images_per_s:.1f} img/s"))
    _overhead_removed(rows)
    return [asdict(r) for r in rows]


def _plain_impls(impls: list[str]) -> list[str]:
    """Plain ResNet-50's rows: the baselines the requested impls are measured against (eager for
    eager / attnfused, compile for the compiled ones)."""
    compiled = [i.startswith("compile") for i in impls]
    return [b for b, want in (("eager", not all(compiled)), ("compile", any(compiled))) if want]


def _median_se(row: E2ERow) -> float:
    """The standard error of a row's median, from its IQR: ~1.25 sigma / sqrt(n), sigma ~ IQR / 1.35."""
    return 1.25 * (row.ms_iqr or 0.0) / 1.35 / max(row.rounds, 1) ** 0.5


def _overhead_removed(rows: list[E2ERow]) -> None:
    """``1 - (t - t_plain) / (t_ref - t_plain)`` with the eager (or compiled) model as ``ref``;
    None with the note "noise" where the blocks' own cost, ``t_ref - t_plain``, is within two
    standard errors of the difference of the two medians: the share would be a ratio of noise."""
    def get(model, impl, mode, prec):
        for r in rows:
            if (r.model, r.impl, r.mode, r.precision) == (model, impl, mode, prec) and r.ms:
                return r
        return None

    for r in rows:
        base_impl = "compile" if r.impl.startswith("compile") else "eager"
        plain, ref = get("plain", base_impl, r.mode, r.precision), get(r.model, base_impl, r.mode, r.precision)
        if r.model == "plain" or r.ms is None or plain is None or ref is None:
            continue
        if ref.ms - plain.ms <= 2 * (_median_se(ref) ** 2 + _median_se(plain) ** 2) ** 0.5:
            r.overhead_note = "noise"
            continue
        r.overhead_removed = 1 - (r.ms - plain.ms) / (ref.ms - plain.ms)


def table(rows: list[dict]) -> str:
    """The terminal table: median ms and its IQR over the rounds, images/s, peak MB (CUDA), and the
    share of the blocks' overhead removed ("noise" where that overhead is within the rows' spread)."""
    head = (f"{'model':<8}{'impl':<20}{'mode':<7}{'precision':<15}{'batch':>6}{'ms':>10}{'IQR':>8}{'img/s':>10}"
            f"{'peak MB':>10}{'overhead removed':>18}")
    lines = [head, "-" * len(head)]
    for r in rows:
        def f(v, spec, w):
            return "-".rjust(w) if v is None else format(v, spec)
        ohr = None if r["overhead_removed"] is None else 100 * r["overhead_removed"]
        removed = f"{ohr:17.0f}%" if ohr is not None else (r.get("overhead_note") or "-").rjust(18)
        lines.append(
            f"{r['model']:<8}{r['impl']:<20}{r['mode']:<7}{r['precision']:<15}{r['batch']:>6}"
            f"{f(r['ms'], '10.1f', 10)}{f(r.get('ms_iqr'), '8.1f', 8)}{f(r['images_per_s'], '10.1f', 10)}"
            f"{f(r['peak_mb'], '10.0f', 10)}" + removed + (f"  {r['error']}" if r["error"] else "")
        )
    return "\n".join(lines)
