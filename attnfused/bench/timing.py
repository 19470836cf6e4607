"""Timers: ``triton.testing.do_bench`` on CUDA; a warmed-up, repeated median on CPU; contenders
timed in turns; a call's peak memory on CUDA."""

from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import time
from typing import Callable, Optional

import torch


def time_ms(fn: Callable[[], object], device: torch.device, min_time_s: float = 1.0, max_reps: int = 100) -> float:
    """Median wall time of ``fn`` in milliseconds. On CPU at least 10 runs and ``min_time_s`` of
    them: on a shared machine a disturbance of a second or two otherwise moves a row's median."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    for _ in range(2):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < 10 or (len(times) < max_reps and time.perf_counter() - start < min_time_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def take_turns(
    calls: list[Callable[[], object]], measure: Callable[[Callable[[], object]], float],
    another_round: Callable[[int], bool],
) -> tuple[list[list[float]], list[Optional[Exception]]]:
    """Each round measures every call once, round ``r`` starting at call ``r mod n`` (so no call is
    always first or last), while ``another_round(r)``; a call whose measurement raised is left out
    of later rounds. Returns the measurements and the exception (or None) per call. Timed one after
    another, contenders took a shared machine's drift with them (micro.py, e2e.py say where)."""
    n = len(calls)
    times: list[list[float]] = [[] for _ in calls]
    errors: list[Optional[Exception]] = [None] * n
    r = 0
    while n and another_round(r):
        for i in [(r + j) % n for j in range(n)]:
            if errors[i] is None:
                try:
                    times[i].append(measure(calls[i]))
                except Exception as e:
                    errors[i] = e
        r += 1
    return times, errors


def peak_mb(call: Callable[[], object], device: torch.device) -> Optional[float]:
    """CUDA: the peak allocation during one ``call()`` above what was allocated before it, in MiB;
    None elsewhere."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = call()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak / 2**20


def copy_bandwidth_gbs(numel: int, dtype: torch.dtype, device: torch.device) -> float:
    """Device-to-device copy bandwidth (read + write bytes per second) on a tensor of ``numel``."""
    src = torch.randn(numel, device=device).to(dtype)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device)
    return 2 * numel * src.element_size() / (ms * 1e-3) / 1e9


def keep_freed_memory() -> Optional[str]:
    """Make glibc's malloc keep freed memory in the process (no mmap'd chunks, no trimming), for
    CPU timings: by default every block-sized tensor (MBs) is mmap'd and returned on free, and the
    next one faults its pages in again. On the 2-core dev VM that swung the same forward+backward
    between ~8 and ~45 ms within one run (eager included); with this it stays put. Applies to
    every implementation alike. Returns what was set, or None where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    if mallopt(m_mmap_max, 0) != 1 or mallopt(m_trim_threshold, 1 << 30) != 1:
        return None
    return "glibc malloc: M_MMAP_MAX=0, M_TRIM_THRESHOLD=1 GiB (freed memory stays in the process)"
