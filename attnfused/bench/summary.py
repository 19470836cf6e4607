"""The README's tables from a bench run's JSON: ``python -m attnfused.bench.summary PATH [--out FILE]``.

PATH is a results JSON written by ``python -m attnfused.bench`` or a folder holding them (every
``*.json`` with bench rows in it, e.g. gpu_all.sh's OUT_DIR with its main run and its tagged
``cuda_*`` / ``triton_tiled`` runs). Prints, as Markdown:

- a heading line per run: device, date, torch / Triton / driver, the command;
- per (dtype, layout, batch) of the micro rows: one line per (block, shape), forward and
  forward+backward median ms of every implementation, and for each attnfused implementation its
  forward+backward speed-up over eager and over ``torch.compile`` and its fraction of the copy
  bandwidth (the DESIGN.md §5 byte count over time, over the run's measured copy rate);
- the end-to-end rows: images/s per model, implementation, mode and precision, and how much of
  the blocks' overhead over plain ResNet-50 each removes;
- benchmarks/fc_gate_bench.py's rows (fc_gate.json): the "fc" gate alone, attnfused's kernels
  (CUDA or CPU, as the run's heading says) against F.linear + aten's elementwise ops.

Every number is copied from the JSON as measured (rounded); nothing is recomputed but ratios the
bench already stored. Rows that failed show their error's first words.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

_SHAPE = ("block", "batch", "channels", "height", "width")


def load_runs(path: Path) -> list[dict]:
    """The bench results at ``path`` (a JSON file, or a folder of them), oldest first."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    runs = []
    for f in files:
        data = json.loads(f.read_text())
        if isinstance(data, dict) and "meta" in data and ("micro" in data or "e2e" in data or _is_fc_gate(data)):
            runs.append({**data, "file": f.name})
    return sorted(runs, key=lambda r: r["meta"].get("date", ""))


def _num(v: Optional[float], digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ms(row: Optional[dict]) -> str:
    if row is None:
        return ""
    if row.get("error"):
        return "failed: " + row["error"].split(":")[0]
    return _num(row["ms"], 3)


def heading(meta: dict, name: str) -> str:
    versions = ", ".join(f"{k} {meta[k]}" for k in ("torch", "triton", "cuda_runtime", "driver") if meta.get(k))
    device = meta.get("device")
    cpu = meta.get("cpu") or {}
    if cpu:  # CPU runs: which machine (the rules and the numbers depend on it)
        caches = ", ".join(f"{k} {v}" for k, v in (cpu.get("caches") or {}).items() if k in ("L2", "L3"))
        what = cpu.get("model_name", "")
        if cpu.get("family"):
            what += f" family {cpu['family']} model {cpu.get('model', '?')}"
        device = f"{device}: {', '.join(t for t in (what.strip(), caches) if t)}"
    return f"**{device}**, {meta.get('date', '')[:10]} ({versions}; `{meta.get('command', '')}`, `{name}`)"


def micro_tables(rows: list[dict]) -> list[str]:
    """One Markdown table per (dtype, layout, batch)."""
    out = []
    groups = sorted({(r["dtype"], r["layout"], r["batch"]) for r in rows})
    for dtype, layout, batch in groups:
        sel = [r for r in rows if (r["dtype"], r["layout"], r["batch"]) == (dtype, layout, batch)]
        impls = list(dict.fromkeys(r["impl"] for r in sel))  # the bench's order: eager, compile, attnfused
        ours = [i for i in impls if i.startswith("attnfused")]
        head = (["block", "shape"] + [f"fwd ms {i}" for i in impls] + [f"fwd+bwd ms {i}" for i in impls]
                + [f"{i}: fwd+bwd x eager / x compile / % copy" for i in ours])
        lines = [f"{dtype}, {layout}, batch {batch}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for key in dict.fromkeys(tuple(r[k] for k in _SHAPE) for r in sel):
            at = {(r["impl"], r["mode"]): r for r in sel if tuple(r[k] for k in _SHAPE) == key}
            cells = [key[0], f"{key[2]}x{key[3]}x{key[4]}"]
            cells += [_ms(at.get((i, "fwd"))) for i in impls] + [_ms(at.get((i, "fwdbwd"))) for i in impls]
            for i in ours:
                r = at.get((i, "fwdbwd"))
                ok = r is not None and not r.get("error")
                frac = None if not ok or r["frac_copy"] is None else 100 * r["frac_copy"]
                cells.append(" / ".join((_num(r["speedup_vs_eager"], 2), _num(r["speedup_vs_compile"], 2),
                                         _num(frac, 0))) if ok else "")
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return out


def e2e_table(rows: list[dict]) -> str:
    head = ["model", "impl", "mode", "precision", "batch", "images/s", "ms", "IQR ms", "peak MB",
            "block overhead removed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        removed = None if r.get("overhead_removed") is None else 100 * r["overhead_removed"]
        fails = r.get("error")
        lines.append("| " + " | ".join([
            r["model"], r["impl"], r["mode"], r["precision"], str(r["batch"]),
            "failed: " + fails.split(":")[0] if fails else _num(r["images_per_s"], 1),
            "" if fails else _num(r["ms"], 1), "" if fails else _num(r.get("ms_iqr"), 1),
            _num(r.get("peak_mb"), 0),
            (r.get("overhead_note") or "") if removed is None else f"{removed:.0f}%",
        ]) + " |")
    return "\n".join(lines)


def _is_fc_gate(data: dict) -> bool:
    """benchmarks/fc_gate_bench.py's output: {"meta", "rows"} with both paths' times per shape."""
    rows = data.get("rows")
    return bool(rows) and isinstance(rows, list) and "fc_gate_fwd_ms" in rows[0]


def fc_gate_table(rows: list[dict]) -> str:
    head = ["B", "n", "C", "R", "fwd ms fc_gate", "fwd ms aten", "bwd ms fc_gate", "bwd ms aten", "max diff"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([str(r["B"]), str(r["n"]), str(r["C"]), str(r["R"]),
                                         _num(r["fc_gate_fwd_ms"], 4), _num(r["aten_fwd_ms"], 4),
                                         _num(r["fc_gate_bwd_ms"], 4), _num(r["aten_bwd_ms"], 4),
                                         f"{r['max_abs_diff']:.1e}"]) + " |")
    return "\n".join(lines)


def summarize(path: Path) -> str:
    """Markdown for every run at ``path``."""
    parts = []
    for run in load_runs(path):
        parts.append(heading(run["meta"], run["file"]))
        if run.get("micro"):
            parts.extend(micro_tables(run["micro"]))
        if run.get("e2e"):
            parts.append(e2e_table(run["e2e"]))
        if _is_fc_gate(run):
            parts.append(fc_gate_table(run["rows"]))
    return "\n\n".join(parts) + "\n" if parts else ""


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", type=Path, help="a bench results JSON, or a folder of them")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown to this file")
    args = p.parse_args(argv)
    text = summarize(args.path)
    if not text:
        print(f"attnfused.bench.summary: no bench results under {args.path}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
