import sys, time, torch
import attnfused
ops = torch.ops.attnfused_C
torch.set_num_threads(int(sys.argv[1]))
res = []
for C, H in [(2048, 7), (512, 28), (256, 56)]:
    for layout in ("nchw",):
        x = torch.randn(8, C, H, H, dtype=torch.float16)
        if layout == "cl": x = x.to(memory_format=torch.channels_last)
        ca = torch.rand(8, C)
        f = lambda: ops.reduce_hw(x, None, None, None, None, None, False, float(H*H), False)
        for _ in range(3): f()
        best = 1e9
        for _ in range(60):
            s = time.perf_counter(); f(); best = min(best, time.perf_counter() - s)
        res.append(f"{C}x{H}²{layout} {best*1e3:.3f}")
print("  ".join(res))
