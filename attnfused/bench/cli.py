"""``python -m attnfused.bench``: microbenchmarks against eager and torch.compile, plus a traffic report."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

from .. import kernels
from .cases import BLOCKS, RESNET50_STAGES, block_refusal, parse_shape
from .micro import default_impls, rows_as_dicts, run_group, stderr_progress
from .report import metadata, micro_table, traffic_table, write_results
from .timing import copy_bandwidth_gbs, keep_freed_memory

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}


def available_providers(device: torch.device) -> list[str]:
    """attnfused kernel providers that can run on ``device`` in this process."""
    return [name for name in kernels.provider_names() if kernels.provider_available(name, device)]


def _typed(parse):
    """An argparse ``type`` whose ValueError message reaches the user (argparse would replace it)."""
    def typed(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    typed.__name__ = parse.__name__
    return typed


def _positive_int(text: str) -> int:
    if not text.lstrip("-").isdigit() or int(text) < 1:
        raise ValueError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"must be a finite number >= 0, got {text!r}")
    return value


def parse_args(argv: list[str] | None, gpu: bool) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m attnfused.bench", description=__doc__)
    p.add_argument("--blocks", nargs="+", choices=list(BLOCKS), default=list(BLOCKS))
    p.add_argument("--batch", nargs="+", type=_typed(_positive_int), default=None,
                   help="batch sizes (default: 32 128 on a GPU, 8 on CPU)")
    p.add_argument("--shape", nargs="+", type=_typed(parse_shape), default=None,
                   help="C,H,W per shape (default: the four ResNet-50 stages)")
    p.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=["fp32", "bf16"] if gpu else ["fp32"])
    p.add_argument("--fp16", action="store_true", help="add fp16 to the dtypes")
    p.add_argument("--layout", nargs="+", choices=["nchw", "channels_last"],
                   default=["nchw", "channels_last"] if gpu else ["nchw"])
    p.add_argument("--mode", nargs="+", choices=["fwd", "fwdbwd"], default=["fwd", "fwdbwd"])
    p.add_argument("--compile-modes", nargs="*", default=None,
                   help="torch.compile modes to compare against; empty: skip torch.compile (default: "
                   "default and max-autotune-no-cudagraphs on a GPU, default on CPU, none with --quick)")
    p.add_argument("--providers", nargs="*", default=None,
                   help="attnfused providers to time (default: every one available on the device)")
    p.add_argument("--no-traffic", action="store_true", help="skip the interpreter traffic report")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="results folder")
    p.add_argument("--tag", default="", help="suffix for the result file names")
    p.add_argument("--e2e", action=argparse.BooleanOptionalAction, default=None,
                   help="end-to-end SE/ECA/CBAM-ResNet-50 runs (default: on with a GPU, off on CPU)")
    p.add_argument("--e2e-models", nargs="+", default=["plain", "se", "eca", "cbam"])
    p.add_argument("--e2e-impls", nargs="+", default=["eager", "attnfused", "compile", "compile+attnfused"])
    p.add_argument("--e2e-modes", nargs="+", choices=["train", "infer"], default=["train", "infer"])
    p.add_argument("--e2e-precision", nargs="+", choices=["fp32", "bf16-autocast"],
                   default=["bf16-autocast", "fp32"] if gpu else ["fp32"])
    p.add_argument("--e2e-batch", type=_typed(_positive_int), default=64 if gpu else 2)
    p.add_argument("--e2e-image", type=_typed(_positive_int), default=224 if gpu else 64)
    p.add_argument("--e2e-seconds", type=_typed(_nonnegative_float), default=10.0,
                   help="time each (precision, mode)'s rows, interleaved round by round, for at least this "
                   "many seconds (and at least 5 rounds, at most 20)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop starting new rows (micro and e2e) after this many minutes; GPU time is boxed")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke configuration: the first of --blocks, --dtype and --layout, shape 16,8,8 at "
                   "batch 2, forward only, no torch.compile unless --compile-modes names some (takes no "
                   "--shape or --batch)")
    p.add_argument("--malloc", choices=["keep", "default"], default="keep",
                   help="CPU runs: 'keep' (default) makes glibc malloc keep freed memory in the process, so "
                   "that no implementation's timing depends on page faults of re-mmap'd tensors; 'default' "
                   "leaves the allocator as it is")
    args = p.parse_args(argv)
    if args.fp16 and "fp16" not in args.dtype:
        args.dtype.append("fp16")
    if args.quick and (args.shape is not None or args.batch is not None):
        p.error("--quick sets its own shape and batch: drop --shape / --batch, or --quick")
    if args.batch is None:
        args.batch = [32, 128] if gpu else [8]
    if args.shape is None:
        args.shape = RESNET50_STAGES
    if args.quick:
        args.blocks, args.batch, args.shape = args.blocks[:1], [2], [(16, 8, 8)]
        args.dtype, args.layout, args.mode = args.dtype[:1], args.layout[:1], ["fwd"]
    if args.e2e is None:
        args.e2e = gpu and not args.quick
    if args.compile_modes is None:
        args.compile_modes = [] if args.quick else ["default", "max-autotune-no-cudagraphs"] if gpu else ["default"]
    # a block that cannot take a shape's channel count would end the run midway: say so now
    refused = {f"{b} at C={c}: {why}" for b in args.blocks for c, _, _ in args.shape if (why := block_refusal(b, c))}
    if refused:
        p.error("these blocks cannot be built for these shapes (pick other --blocks or --shape): " + "; ".join(sorted(refused)))
    return args


def main(argv: list[str] | None = None) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args = parse_args(argv, device.type == "cuda")
    providers = available_providers(device) if args.providers is None else args.providers
    if device.type != "cuda":
        print(
            "attnfused.bench: no GPU here. Timing eager and torch.compile on CPU"
            + (f" and the attnfused providers {providers}" if providers
               else " (attnfused._C is not built, so there is no fused CPU provider to time)")
            + "; the Triton kernels' GPU timings need a GPU."
            + ("" if args.no_traffic else " The traffic report below counts their bytes in the Triton interpreter."),
            file=sys.stderr,
        )
    malloc = keep_freed_memory() if device.type == "cpu" and args.malloc == "keep" else None
    if malloc:
        print(f"attnfused.bench: {malloc}", file=sys.stderr)
    impls = default_impls(device, providers, args.compile_modes)
    dtypes = [DTYPES[d] for d in args.dtype]
    biggest = max(b * c * h * w for b in args.batch for c, h, w in args.shape)
    copy_gbs = {d: copy_bandwidth_gbs(biggest, d, device) for d in dtypes}
    groups = [
        (blk, b, chw, d, lay, mode)
        for d in dtypes for lay in args.layout for mode in args.mode
        for blk in args.blocks for b in args.batch for chw in args.shape
    ]
    say = stderr_progress(len(groups) * len(impls))
    rows = []
    deadline = None if args.max_minutes is None else time.monotonic() + 60 * args.max_minutes
    for i, (blk, b, chw, d, lay, mode) in enumerate(groups):
        if deadline is not None and time.monotonic() > deadline:
            print(f"attnfused.bench: --max-minutes reached, {len(groups) - i} of {len(groups)} groups not run",
                  file=sys.stderr)
            break
        rows += run_group(blk, b, chw, d, lay, mode, impls, device, copy_gbs[d], say)
    rows = rows_as_dicts(rows)

    e2e_rows = None
    if args.e2e:
        from . import e2e

        e2e_rows = e2e.run(device, args.e2e_models, args.e2e_impls, args.e2e_modes, args.e2e_precision,
                           args.e2e_batch, args.e2e_image, stderr_progress(0), deadline, args.e2e_seconds)

    traffic = None
    if not args.no_traffic:
        from .traffic_report import SHAPE, run_in_subprocess

        print("attnfused.bench: counting traffic in the Triton interpreter ...", file=sys.stderr, flush=True)
        traffic = run_in_subprocess()

    meta = metadata(device, {str(d).replace("torch.", ""): v for d, v in copy_gbs.items()})
    meta["malloc"] = malloc or "as the process found it"
    print(f"\n{meta['device']}  torch {meta['torch']}  triton {meta['triton']}  {meta['date']}")
    print("copy bandwidth (GB/s, read+write): " + ", ".join(f"{k} {v:.1f}" for k, v in meta["copy_bandwidth_gbs"].items()))
    print(f"allocator: {meta['malloc']}")
    print("GB/s counts the minimal bytes (forward 2 N, forward+backward 5 N elements).\n")
    print(micro_table(rows))
    if traffic is not None:
        print(f"\nTraffic in passes over x (bytes / N*elem_size), counted in the Triton interpreter on {SHAPE}:")
        print(traffic_table(traffic))
    if e2e_rows is not None:
        from .e2e import table as e2e_table

        print("\nEnd to end (ResNet-50, channels_last; overhead removed = share of the blocks' cost over plain ResNet-50 that is gone):")
        print(e2e_table(e2e_rows))
    slug = re.sub(r"[^A-Za-z0-9]+", "-", meta["device"]).strip("-").lower()
    stem = f"bench-{slug}-{meta['date'][:10]}" + (f"-{args.tag}" if args.tag else "")
    for path in write_results(args.out, stem, meta, rows, traffic, e2e_rows):
        print(f"wrote {path}")
    failed = [r for r in rows + (e2e_rows or []) if r["error"] is not None]
    return 0 if not failed else 1
