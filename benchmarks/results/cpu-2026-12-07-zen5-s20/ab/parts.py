import sys, time, torch, attnfused
from attnfused.bench.timing import keep_freed_memory
keep_freed_memory()
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
op = torch.ops.attnfused_C
C, H = 2048, 7
x = torch.randn(8, C, H, H)
ca = torch.rand(8, C)
sa = torch.rand(8, H * H)
from timer import p25_ms as t  # (this folder's timer.py)
r = {
 "clone": t(lambda: x.clone()),
 "pool_hw avg": t(lambda: op.reduce_hw(x, None, None, None, None, None, False, 49.0, False)),
 "pool_hw avg+max": t(lambda: op.reduce_hw(x, None, None, None, None, None, True, 49.0, False)),
 "pool_hw avg+max+arg": t(lambda: op.reduce_hw(x, None, None, None, None, None, True, 49.0, True)),
 "pool_c x*ca": t(lambda: op.reduce_c(x, None, ca, True, float(C))),
 "x*ca": t(lambda: op.pointwise(x, x, True, ca, None, None, None, None, None, None, None)),
 "x*ca*sa": t(lambda: op.pointwise(x, x, True, ca, sa, None, None, None, None, None, None)),
}
print("  ".join(f"{k} {v:.4f}" for k, v in r.items()))
