"""Bytes each block moves, forward and backward, counted in the Triton interpreter, beside eager.

Run as ``python -m attnfused.bench.traffic_report`` (prints JSON). The CLI starts it in a
subprocess with ``TRITON_INTERPRET=1`` and no visible GPU, since kernels can only be counted when
interpreted and Triton decides that at import. Units: passes over ``x`` (bytes / (N * elem_size)).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SHAPE = (2, 32, 14, 14)  # small: the interpreter costs ~0.5 ms per program


def measure() -> list[dict]:
    import torch

    import attnfused
    from attnfused.traffic import count_traffic

    from .cases import BLOCKS

    b, c, h, w = SHAPE
    rows = []
    for block, make in BLOCKS.items():
        for layout in ("nchw", "channels_last"):
            torch.manual_seed(0)
            m = make(c)
            x = torch.randn(SHAPE)
            if layout == "channels_last":
                x = x.to(memory_format=torch.channels_last)
            x.requires_grad_(True)
            dy = torch.randn(SHAPE)
            n, es = x.numel(), x.element_size()
            row = {"block": block, "layout": layout, "shape": list(SHAPE)}
            for backend, key in (("triton", "fused"), ("reference", "eager")):
                with attnfused.use_backend(backend):
                    fwd = count_traffic(m, x, full_numel=n)
                    y = fwd.result
                    bwd = count_traffic(y.backward, dy, full_numel=n)
                row[f"{key}_fwd"] = round(fwd.per_element(es, n, full_only=True), 3)
                row[f"{key}_bwd"] = round(bwd.per_element(es, n, full_only=True), 3)
                row[f"{key}_fwd_small"] = round(fwd.kernel_small_bytes / (n * es), 3)
                row[f"{key}_bwd_small"] = round(bwd.kernel_small_bytes / (n * es), 3)
                row[f"{key}_aten_ops"] = len(fwd.aten_ops) + len(bwd.aten_ops)
                x.grad = None
            rows.append(row)
    return rows


def run_in_subprocess() -> list[dict]:
    """Measure in a fresh interpreter-mode process (works whether or not this one has a GPU)."""
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    out = subprocess.run(
        [sys.executable, "-m", "attnfused.bench.traffic_report"], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise RuntimeError(f"traffic report failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are first imported (inside measure)
    json.dump(measure(), sys.stdout)
