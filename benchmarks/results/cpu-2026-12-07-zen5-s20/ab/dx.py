import time, torch, attnfused
from attnfused.bench.timing import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(1)
op = torch.ops.attnfused_C
B, C, P = 8, 2048, 49
dy = torch.randn(B, C, 7, 7); ca = torch.rand(B, C); sa = torch.rand(B, P); da = torch.randn(B, P); dm = torch.randn(B, P)
amc = torch.randint(0, C, (B, P), dtype=torch.int32); davg = torch.randn(B, C); dmax = torch.randn(B, C)
amp = torch.randint(0, P, (B, C), dtype=torch.int32)
from timer import p25_ms as t  # (this folder's timer.py)
r = {"se_avg dx": t(lambda: op.pointwise(dy, dy, False, ca, None, None, None, None, davg, None, None)),
     "se_max dx": t(lambda: op.pointwise(dy, dy, False, ca, None, None, None, None, None, dmax, amp)),
     "cbam dx": t(lambda: op.pointwise(dy, dy, False, ca, sa, da, dm, amc, davg, dmax, amp))}
print("  ".join(f"{k} {v:.4f}" for k, v in r.items()))
