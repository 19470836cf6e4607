"""Output: terminal tables, JSON and CSV with the run's metadata, PNG plots."""

from __future__ import annotations

import csv
import datetime as _dt
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Optional

import torch

from .._machine import CPU0_CACHES, CPUINFO, cpu0_caches, cpu_fields


def metadata(device: torch.device, copy_gbs: Optional[float]) -> dict:
    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "attnfused.bench", *sys.argv[1:]]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "copy_bandwidth_gbs": copy_gbs,
    }
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:
        meta["triton"] = None
    if device.type == "cpu":
        meta["cpu"] = cpu_facts()
    if device.type == "cuda":
        try:
            meta["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30,
            ).stdout.strip().splitlines()[0]
        except Exception:
            meta["driver"] = None
    return meta


def cpu_facts(cpuinfo: Path = CPUINFO, caches: Path = CPU0_CACHES) -> dict:
    """What told this project's CPU VMs apart in its measurements (the providers' rules and their
    speed depend on them): vendor, family / model, model name, and cpu0's caches as Linux reports
    them (``{"L1d": "48K", "L2": "1024K", "L3": "32768K"}``). Empty where not available."""
    fields = cpu_fields(cpuinfo)
    keys = {"vendor_id": "vendor", "cpu family": "family", "model": "model", "model name": "model_name"}
    facts: dict = {name: fields[key] for key, name in keys.items() if key in fields}
    sizes = cpu0_caches(caches)
    if sizes:
        facts["caches"] = sizes
    return facts


def _fmt(v, spec: str) -> str:
    width = int(spec.split(".")[0])
    return "-".rjust(width) if v is None else format(v, spec)


def micro_table(rows: list[dict]) -> str:
    head = f"{'block':<10}{'shape (BxCxHxW)':<18}{'dtype':<9}{'layout':<14}{'mode':<7}{'impl':<34}{'ms':>9}{'GB/s':>9}{'%copy':>7}{'x eager':>8}{'x comp':>8}{'peak MB':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = f"{r['batch']}x{r['channels']}x{r['height']}x{r['width']}"
        frac = None if r["frac_copy"] is None else 100 * r["frac_copy"]
        tail = f"  {r['error']}" if r["error"] else ""
        lines.append(
            f"{r['block']:<10}{shape:<18}{r['dtype']:<9}{r['layout']:<14}{r['mode']:<7}{r['impl']:<34}"
            f"{_fmt(r['ms'], '9.3f')}{_fmt(r['gbs'], '9.1f')}{_fmt(frac, '7.1f')}"
            f"{_fmt(r['speedup_vs_eager'], '8.2f')}{_fmt(r['speedup_vs_compile'], '8.2f')}{_fmt(r['peak_mb'], '9.1f')}{tail}"
        )
    return "\n".join(lines)


def traffic_table(rows: list[dict]) -> str:
    head = f"{'block':<11}{'layout':<15}{'fused fwd':>10}{'eager fwd':>10}{'fused bwd':>10}{'eager bwd':>10}   small-tensor requests (fused fwd/bwd)"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['block']:<11}{r['layout']:<15}{r['fused_fwd']:>10.2f}{r['eager_fwd']:>10.2f}"
            f"{r['fused_bwd']:>10.2f}{r['eager_bwd']:>10.2f}   {r['fused_fwd_small']:.2f} / {r['fused_bwd_small']:.2f}"
        )
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "extra"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def write_results(
    out_dir: Path, stem: str, meta: dict, rows: list[dict], traffic: Optional[list[dict]],
    e2e: Optional[list[dict]] = None,
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps({"meta": meta, "micro": rows, "traffic": traffic, "e2e": e2e}, indent=1))
    written.append(path)
    if e2e:
        written.append(_write_csv(out_dir / f"{stem}-e2e.csv", e2e))
    if rows:
        written.append(_write_csv(out_dir / f"{stem}.csv", rows))
        png = plot(out_dir / f"{stem}.png", meta, rows)
        if png:
            written.append(png)
    return written


def plot(path: Path, meta: dict, rows: list[dict]) -> Optional[Path]:
    """Speed-up vs eager and fraction of copy bandwidth per shape; skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("attnfused.bench: matplotlib not installed, no plot written", file=sys.stderr)
        return None
    ok = [r for r in rows if r["ms"] is not None]
    if not ok:
        return None
    groups = sorted({(r["dtype"], r["layout"], r["mode"]) for r in ok})
    fig, axes = plt.subplots(len(groups), 2, figsize=(14, 3.8 * len(groups)), squeeze=False)
    for gi, (dtype, layout, mode) in enumerate(groups):
        sel = [r for r in ok if (r["dtype"], r["layout"], r["mode"]) == (dtype, layout, mode)]
        labels = sorted({(r["block"], r["batch"], r["channels"], r["height"]) for r in sel})
        panels = ((0, "speedup_vs_eager", "speed-up vs eager"), (1, "frac_copy", "fraction of copy bandwidth"))
        for col, key, ylabel in panels:
            ax = axes[gi][col]
            # Eager is the unit of the speed-up panel; it shows only in the bandwidth panel.
            impls = sorted({r["impl"] for r in sel if col == 1 or r["impl"] != "eager"})
            width = 0.8 / max(len(impls), 1)
            for ii, impl in enumerate(impls):
                vals = []
                for lab in labels:
                    match = [r for r in sel if r["impl"] == impl and (r["block"], r["batch"], r["channels"], r["height"]) == lab]
                    vals.append(match[0][key] if match and match[0][key] is not None else 0.0)
                ax.bar([i + ii * width for i in range(len(labels))], vals, width, label=impl)
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))])
            ax.set_xticklabels([f"{b} {n}x{c}x{h}²" for b, n, c, h in labels], fontsize=6, rotation=60, ha="right")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{dtype} {layout} {mode}", fontsize=9)
            if col == 0:
                ax.axhline(1.0, color="k", lw=0.5)
            if impls:
                ax.legend(fontsize=7)
    fig.suptitle(f"attnfused on {meta['device']} ({meta['date'][:10]})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
