import time, torch, attnfused
from attnfused.bench.timing import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(1)
op = torch.ops.attnfused_C
B, C, P = 8, 2048, 49
dy = torch.randn(B, C, 7, 7); x = torch.randn(B, C, 7, 7); sa = torch.rand(B, P); da = torch.randn(B, P); dm = torch.randn(B, P)
amc = torch.randint(0, C, (B, P), dtype=torch.int32)
from timer import p25_ms as t  # (this folder's timer.py)
r = {"dot": t(lambda: op.reduce_hw(dy, x, None, None, None, None, False, 1.0, False)),
     "mid dot": t(lambda: op.reduce_hw(dy, x, sa, da, dm, amc, False, 1.0, False)),
     "pool avg": t(lambda: op.reduce_hw(x, None, None, None, None, None, False, 49.0, False))}
print("  ".join(f"{k} {v:.4f}" for k, v in r.items()))
