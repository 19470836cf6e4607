import sys, time, torch, attnfused
from attnfused.bench.cases import BLOCKS
from attnfused.bench.timing import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
name = sys.argv[1]
C, H = 2048, 7
x = torch.randn(8, C, H, H).requires_grad_(True)
dy = torch.randn(8, C, H, H)
m = BLOCKS[name](C)
with attnfused.use_backend("cpu"):
    for _ in range(20): m(x).backward(dy)
    ts = []
    t_end = time.time() + float(sys.argv[2])
    while time.time() < t_end:
        t = time.perf_counter(); y = m(x); y.backward(dy); x.grad = None; ts.append(time.perf_counter() - t)
ts.sort(); print(f"{name} fwd+bwd p25 {ts[len(ts)//4]*1e3:.3f} ms n={len(ts)}")
