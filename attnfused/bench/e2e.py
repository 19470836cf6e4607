"""End to end: SE-, ECA- and CBAM-ResNet-50 beside plain ResNet-50, eager vs attnfused vs compiled.

The attention block sits on each bottleneck's residual branch after its last BatchNorm, before the
addition (as in the SE, ECA and CBAM papers): ``bn3`` becomes ``Sequential(bn3, block)``. Needs
torchvision (the ``bench`` extra). The figure that matters: how much of the blocks' overhead over
plain ResNet-50 attnfused removes, ``1 - (t_fused - t_plain) / (t_eager - t_plain)``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
from torch import nn

import attnfused

from .timing import time_ms

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
    ms: Optional[float] = None
    images_per_s: Optional[float] = None
    peak_mb: Optional[float] = None
    overhead_removed: Optional[float] = None  # vs eager, relative to plain ResNet-50
    error: Optional[str] = None


# impl -> (attnfused backend, compile?)
IMPLS = {
    "eager": ("reference", False),
    "attnfused": ("auto", False),
    "compile": ("reference", True),
    "compile+attnfused": ("auto", True),
}


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


def run(
    device: torch.device, models: list[str], impls: list[str], modes: list[str], precisions: list[str],
    batch: int, image: int, progress: Callable[[str], None], deadline: Optional[float] = None,
) -> list[dict]:
    """All (precision, mode, model, impl) rows; rows not started by ``deadline`` (monotonic s) are
    reported with error "skipped: time budget"."""
    rows: list[E2ERow] = []
    for precision in precisions:
        for mode in modes:
            for name in models:
                for impl in impls if name != "plain" else ["eager", "compile"]:
                    row = E2ERow(name, impl, mode, precision, batch, image)
                    backend, compiled = IMPLS[impl]
                    if deadline is not None and time.monotonic() > deadline:
                        row.error = "skipped: time budget"
                        rows.append(row)
                        continue
                    try:
                        torch.manual_seed(0)
                        model = resnet50_with(name).to(device).to(memory_format=torch.channels_last)
                        x = torch.randn(batch, 3, image, image, device=device).to(memory_format=torch.channels_last)
                        target = torch.randint(0, 1000, (batch,), device=device)
                        runner = torch.compile(model) if compiled else model
                        step = _step_fn(runner, x, target, mode, precision, backend)
                        row.ms = time_ms(step, device, min_time_s=1.0, max_reps=20)
                        row.images_per_s = batch / (row.ms * 1e-3)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                            torch.cuda.reset_peak_memory_stats()
                            step()
                            torch.cuda.synchronize()
                            row.peak_mb = torch.cuda.max_memory_allocated() / 2**20
                    except Exception as e:
                        row.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                    progress(f"e2e {name} {impl} {mode} {precision} b{batch} {image}px: "
                             + (row.error or f"{row.ms:.1f} ms, {row.images_per_s:.1f} img/s"))
                    rows.append(row)
    _overhead_removed(rows)
    return [asdict(r) for r in rows]


def _overhead_removed(rows: list[E2ERow]) -> None:
    def t(model, impl, mode, prec):
        for r in rows:
            if (r.model, r.impl, r.mode, r.precision) == (model, impl, mode, prec) and r.ms:
                return r.ms
        return None

    for r in rows:
        base_impl = "compile" if r.impl.startswith("compile") else "eager"
        plain, ref = t("plain", base_impl, r.mode, r.precision), t(r.model, base_impl, r.mode, r.precision)
        if r.model == "plain" or r.ms is None or plain is None or ref is None or ref <= plain:
            continue
        r.overhead_removed = 1 - (r.ms - plain) / (ref - plain)


def table(rows: list[dict]) -> str:
    head = f"{'model':<8}{'impl':<20}{'mode':<7}{'precision':<15}{'batch':>6}{'ms':>10}{'img/s':>10}{'peak MB':>10}{'overhead removed':>18}"
    lines = [head, "-" * len(head)]
    for r in rows:
        def f(v, spec, w):
            return "-".rjust(w) if v is None else format(v, spec)
        ohr = None if r["overhead_removed"] is None else 100 * r["overhead_removed"]
        lines.append(
            f"{r['model']:<8}{r['impl']:<20}{r['mode']:<7}{r['precision']:<15}{r['batch']:>6}"
            f"{f(r['ms'], '10.1f', 10)}{f(r['images_per_s'], '10.1f', 10)}{f(r['peak_mb'], '10.0f', 10)}"
            + ("-".rjust(18) if ohr is None else f"{ohr:17.0f}%") + (f"  {r['error']}" if r["error"] else "")
        )
    return "\n".join(lines)
