"""One process: the cpu provider's fc gate alone (forward; backward), fp32, 8 rows (SE at batch 8),
fastest of 200 calls, and SE avg / CBAM FC blocks (batch 8) forward and forward+backward, median of 60.
Usage: [ATTNFUSED_CPU_AVX512=0] python abgate.py THREADS"""
import os, sys, time, torch
import attnfused
from attnfused.kernels.extension import CPU
from attnfused.bench.cases import BLOCKS
from attnfused.bench.timing import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(int(sys.argv[1]))
tag = "avx2" if os.environ.get("ATTNFUSED_CPU_AVX512") == "0" else "wide"
def best(f, n=200):
    for _ in range(5): f()
    b = 1e9
    for _ in range(n):
        s = time.perf_counter(); f(); b = min(b, time.perf_counter() - s)
    return b * 1e3
def med(f, n=60):
    for _ in range(5): f()
    ts = []
    for _ in range(n):
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    ts.sort(); return ts[n // 2] * 1e3
res = []
g = torch.Generator().manual_seed(0)
for c in (256, 512, 1024, 2048):
    r = c // 16
    s = torch.randn(8, c, generator=g)
    w = dict(w1=torch.randn(r, c, generator=g) * c ** -0.5, b1=torch.zeros(r), w2=torch.randn(c, r, generator=g) * r ** -0.5, b2=torch.zeros(c))
    ca, z, h = CPU.fc_gate(s, w, 1, "relu", "sigmoid")
    dca = torch.randn(8, c, generator=g)
    res.append(f"gate{c} {best(lambda: CPU.fc_gate(s, w, 1, 'relu', 'sigmoid')):.4f}/{best(lambda: CPU.fc_gate_backward(dca, s, z, ca, h, w, 1, 'relu', 'sigmoid')):.4f}")
for name in ("se_avg", "cbam_fc"):
    for c, hw in ((1024, 14), (2048, 7)):
        m = BLOCKS[name](c)
        x = torch.randn(8, c, hw, hw, generator=g).requires_grad_()
        dy = torch.randn(8, c, hw, hw, generator=g)
        def fb():
            for p in m.parameters(): p.grad = None
            x.grad = None
            m(x).backward(dy)
        with attnfused.use_backend("cpu"):
            with torch.no_grad():
                f = med(lambda: m(x))
            res.append(f"{name}{c}x{hw} {f:.3f}/{med(fb):.3f}")
print(tag, "  ".join(res), flush=True)
