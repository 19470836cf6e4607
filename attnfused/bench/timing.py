"""Timers: ``triton.testing.do_bench`` on CUDA; a warmed-up, repeated median on CPU."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def time_ms(fn: Callable[[], object], device: torch.device, min_time_s: float = 0.3, max_reps: int = 50) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    for _ in range(2):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < 5 or (len(times) < max_reps and time.perf_counter() - start < min_time_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def copy_bandwidth_gbs(numel: int, dtype: torch.dtype, device: torch.device) -> float:
    """Device-to-device copy bandwidth (read + write bytes per second) on a tensor of ``numel``."""
    src = torch.randn(numel, device=device).to(dtype)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device)
    return 2 * numel * src.element_size() / (ms * 1e-3) / 1e9
