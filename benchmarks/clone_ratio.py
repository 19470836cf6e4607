"""Forward time of each block (cpu provider) as a multiple of ``x.clone()`` timed in the same loop.

The bench's "x clone" column divides by one copy-bandwidth measurement taken at the start of a run;
on a shared machine that one number moved between 12 and 26 GB/s from run to run. Here every round
times the clone and the five blocks back to back on the same tensor, and the ratio is taken per
round (median over rounds). CPU, fp32, NCHW, batch 8, glibc malloc keeping freed memory (as the
bench's default). Usage: python benchmarks/clone_ratio.py [rounds]
"""

from __future__ import annotations

import statistics
import sys

import torch

import attnfused
from attnfused.bench.cases import BLOCKS, RESNET50_STAGES
from attnfused.bench.timing import keep_freed_memory, time_ms


def _median_ms(fn) -> float:
    """The bench's CPU timer with a fixed 10 runs: one round's clone and block stay close in time."""
    return time_ms(fn, torch.device("cpu"), min_time_s=0.0)


def main(rounds: int = 5) -> None:
    print(keep_freed_memory() or "allocator left alone")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median over {rounds} rounds of "
          "(block forward / x.clone()), each round timing both back to back")
    names = ["se_avg", "se_max", "eca", "cbam_fc", "cbam_conv"]
    print("stage".ljust(18) + "clone ms".rjust(10) + "".join(n.rjust(11) for n in names))
    for c, h, w in RESNET50_STAGES:
        x = torch.randn(8, c, h, w)
        mods = {n: BLOCKS[n](c) for n in names}
        ratios = {n: [] for n in names}
        clones = []
        with torch.no_grad(), attnfused.use_backend("cpu"):
            for _ in range(rounds):
                for n, m in mods.items():
                    clone = _median_ms(lambda: x.clone())
                    ratios[n].append(_median_ms(lambda: m(x)) / clone)
                    clones.append(clone)
        row = f"{c}x{h}x{w}".ljust(18) + f"{statistics.median(clones):10.2f}"
        print(row + "".join(f"{statistics.median(ratios[n]):11.2f}" for n in names), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
