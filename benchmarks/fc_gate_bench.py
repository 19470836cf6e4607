"""The "fc" channel gate alone: attnfused's gate kernels against F.linear + aten's elementwise ops.

Both sides run the same function, :func:`attnfused.ops._gates.channel_forward` / ``channel_backward``
(what the block op calls), on a block's pooled statistics (``[n B, C]`` in, ``ca [B, C]`` out):
once with the provider's ``fc_gate`` hooks, once without (``kern=None``: F.linear and aten's
elementwise ops). On a GPU that is ``csrc/cuda/fc_gate.cu`` against cuBLAS, on CPU
``csrc/cpu/fc_gate.cpp`` against MKL. The block bench times the gate inside SE / CBAM-FC
(``gpu_all.sh`` step ``cuda_cublas``); this times it alone, in a few seconds, at the shapes where
it costs the most next to the block's passes over x: ResNet-50's last two stages (C = 1024, 2048,
ratio 16), batch 32 and 128 on a GPU, 8 and 32 on CPU, one statistic (SE) and two (CBAM). fp32,
the accumulation dtype the gate runs in for every input dtype.

Per row: median ms of forward and of backward (``triton.testing.do_bench`` on a GPU, the bench's
repeated timer on CPU), the multiply-adds each direction does, and the largest difference between
the two sides' outputs (a sanity check: the sums run in different orders).

Usage: ``python benchmarks/fc_gate_bench.py [--device cpu] [--batch B ...] [--out DIR]`` (needs the
compiled extension, and for the default device a CUDA GPU; writes fc_gate.json / fc_gate.csv to DIR).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import sys
from typing import Callable, Optional

import torch

from attnfused.ops import _gates
from attnfused.spec import ChannelSpec


def shapes(batches: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """(B, n, C, R): batch, stacked statistics (1: SE's avg, 2: CBAM's avg + max), channels, hidden width."""
    return [(b, n, c, c // 16) for b in batches for n in (1, 2) for c in (1024, 2048)]


DEFAULT_BATCHES = {"cuda": (32, 128), "cpu": (8, 32)}


def _case(b: int, n: int, c: int, r: int, device: torch.device, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).to(device)

    s = rand(n * b, c)
    w = {"w1": rand(r, c, scale=c**-0.5), "b1": rand(r, scale=0.1), "w2": rand(c, r, scale=r**-0.5), "b2": rand(c, scale=0.1)}
    spec = ChannelSpec(gate="fc", pool="avgmax" if n == 2 else "avg")
    return spec, s[:b], (s[b:] if n == 2 else None), w, rand(b, c)


def _calls(kern, spec: ChannelSpec, avg, mx, w: dict, dca) -> tuple[Callable, Callable, tuple]:
    """(forward, backward, (forward's outputs, backward's outputs)) of the gate through ``kern``."""
    def fwd():
        return _gates.channel_forward(avg, mx, spec, w, kern)

    ca, z, h = fwd()

    def bwd():
        return _gates.channel_backward(dca, avg, mx, z, ca, h, spec, w, kern)

    return fwd, bwd, ((ca, z), bwd())


def _flat(out) -> list[torch.Tensor]:
    """The tensors of a (nested) result, None and the saved h left out (its layout is the caller's)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _flat(out[k])]
    if isinstance(out, (tuple, list)):
        return [t for x in out for t in _flat(x)]
    return []


def run(provider, device: torch.device, shapes: list[tuple[int, int, int, int]],
        timer: Callable[[Callable[[], object]], float]) -> list[dict]:
    """One row per shape: ``provider`` (with fc_gate hooks) against the aten path, timed by ``timer``."""
    # The kernels at every shape: the block op hands the gate back to aten above the provider's
    # fc_gate_max_rows (the "cpu" provider); this times both sides on either side of that bound.
    provider = copy.copy(provider)
    provider.fc_gate_max_rows = None
    rows = []
    for b, n, c, r in shapes:
        spec, avg, mx, w, dca = _case(b, n, c, r, device)
        f_ours, b_ours, out_ours = _calls(provider, spec, avg, mx, w, dca)
        f_aten, b_aten, out_aten = _calls(None, spec, avg, mx, w, dca)
        diff = max((x - y).abs().max().item() for x, y in zip(_flat(out_ours), _flat(out_aten)) if x.numel())
        row = {"B": b, "n": n, "C": c, "R": r,
               "fwd_macs": (n * b + b) * c * r, "bwd_macs": (2 * b + 2 * n * b) * c * r, "max_abs_diff": diff}
        for name, fn in (("fc_gate_fwd_ms", f_ours), ("aten_fwd_ms", f_aten), ("fc_gate_bwd_ms", b_ours), ("aten_bwd_ms", b_aten)):
            row[name] = timer(fn)
        rows.append(row)
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="where to run (default: cuda)")
    p.add_argument("--batch", type=int, nargs="+", default=None,
                   help="batch sizes (default: 32 128 on cuda, 8 32 on cpu)")
    p.add_argument("--out", default=None, help="folder for fc_gate.json / fc_gate.csv (default: print only)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("fc_gate_bench: needs a CUDA GPU (the gate's CUDA kernels cannot run here; --device cpu times "
              "the CPU kernels)", file=sys.stderr)
        return 2
    from attnfused.bench.report import metadata
    from attnfused.bench.summary import fc_gate_table
    from attnfused.bench.timing import keep_freed_memory, time_ms
    from attnfused.kernels.extension import CPU, CUDA

    provider = CUDA if args.device == "cuda" else CPU
    why = provider.available()
    if why is not None or getattr(provider, "fc_gate", None) is None:
        switch = f"ATTNFUSED_{args.device.upper()}_FC_GATE=0"
        print(f"fc_gate_bench: the {args.device} provider's fc gate is not available ({why or switch})", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_memory()  # as the block bench (attnfused.bench.timing)
    rows = run(provider, device, shapes(tuple(args.batch or DEFAULT_BATCHES[args.device])), lambda fn: time_ms(fn, device))
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"fc gate alone on {where}, torch {torch.__version__}, fp32, ms (median)")
    print(fc_gate_table(rows))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        meta = metadata(device, None)  # the bench's: device, date, torch / Triton / driver versions
        meta["command"] = " ".join([os.path.basename(sys.executable), *sys.argv])
        with open(os.path.join(args.out, "fc_gate.json"), "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        with open(os.path.join(args.out, "fc_gate.csv"), "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=list(rows[0]))
            wr.writeheader()
            wr.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
