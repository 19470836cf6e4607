"""The A/B scripts' timer: the 25th percentile of ``n`` calls after 50 warm-up calls, in ms."""
import time


def p25_ms(f, n: int = 1500) -> float:
    for _ in range(50):
        f()
    ts = []
    for _ in range(n):
        a = time.perf_counter()
        f()
        ts.append(time.perf_counter() - a)
    ts.sort()
    return ts[len(ts) // 4] * 1e3
