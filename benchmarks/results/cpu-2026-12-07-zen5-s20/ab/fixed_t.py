import sys, time, torch, attnfused
from attnfused.bench.cases import BLOCKS
from attnfused.bench.timing import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(1)
name = sys.argv[1]
x = torch.randn(8, 2048, 7, 7).requires_grad_(True)
dy = torch.randn(8, 2048, 7, 7)
m = BLOCKS[name](2048)
out = []
with attnfused.use_backend("cpu"):
    for _ in range(30):
        y = m(x); y.backward(dy); x.grad = None
    for rnd in range(5):
        t = time.perf_counter()
        for _ in range(200):
            y = m(x); y.backward(dy); x.grad = None
        out.append((time.perf_counter() - t) / 200 * 1e3)
print(name, " ".join(f"{v:.3f}" for v in sorted(out)))
