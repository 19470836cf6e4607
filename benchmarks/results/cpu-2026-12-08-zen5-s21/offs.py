# x*ca alone (the cpu provider's scale) with x at offsets mod 4 KiB from y: row loop vs 8-row loop.
import os, sys, time, torch
torch.set_num_threads(1)
from attnfused.bench.timing import keep_freed_memory; keep_freed_memory()
from attnfused.kernels import load_provider
prov = load_provider("cpu", torch.device("cpu"))
B, C, P = 8, 2048, 49
N = B * C * P
base = torch.randn(N + 4096)
ca = torch.rand(B, C)
def t(x, reps=300):
    for _ in range(20): prov.scale(x, ca, None)
    best = []
    for _ in range(5):
        s = time.perf_counter()
        for _ in range(reps): prov.scale(x, ca, None)
        best.append((time.perf_counter() - s) / reps * 1e3)
    return sorted(best)[1]
y = prov.scale(base[:N].view(B, C, 7, 7), ca, None)
yaddr = y.data_ptr(); del y
print("y mod 4096:", yaddr % 4096)
for off in list(range(0, 1024, 64)):
    x = base[off:off + N].view(B, C, 7, 7)
    y = prov.scale(x, ca, None); ya = y.data_ptr(); del y
    os.environ.pop("AF_EXP_SHORT8", None); a = t(x)
    os.environ["AF_EXP_SHORT8"] = "1"; b = t(x)
    print(f"x-y mod 4096 = {(x.data_ptr() - ya) % 4096:5d}  rows {a:.4f}  8-row {b:.4f}")
