import sys, time, torch, attnfused
torch.set_num_threads(1)
op = torch.ops.attnfused_C
x = torch.randn(8, 2048, 7, 7); ca = torch.rand(8, 2048)
from timer import p25_ms as t  # (this folder's timer.py)
print(f"sum {t(lambda: op.reduce_c(x, None, ca, False, 2048.0)):.4f} sum+max+arg {t(lambda: op.reduce_c(x, None, ca, True, 2048.0)):.4f} nocasum {t(lambda: op.reduce_c(x, None, None, False, 2048.0)):.4f} empty {t(lambda: op.reduce_c(x[:, :1], None, None, False, 2048.0)):.4f}")
