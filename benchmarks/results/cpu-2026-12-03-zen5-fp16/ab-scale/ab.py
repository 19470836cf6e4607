"""One process: the fp16 forward scale (``scale``) or the NCHW avg pool over H*W (``pool``) alone,
batch 8, fastest of 60 calls per shape. Usage: python ab.py THREADS scale|pool"""
import sys, time, torch
import attnfused
ops = torch.ops.attnfused_C
torch.set_num_threads(int(sys.argv[1]))
what = sys.argv[2]
res = []
for C, H in [(2048, 7), (512, 28), (256, 56)]:
    for layout in ("nchw", "cl") if what == "scale" else ("nchw",):
        x = torch.randn(8, C, H, H, dtype=torch.float16)
        if layout == "cl": x = x.to(memory_format=torch.channels_last)
        ca = torch.rand(8, C)
        if what == "scale":
            f = lambda: ops.pointwise(x, x, True, ca, None, None, None, None, None, None, None)
        else:
            f = lambda: ops.reduce_hw(x, None, None, None, None, None, False, float(H * H), False)
        for _ in range(3): f()
        best = 1e9
        for _ in range(60):
            s = time.perf_counter(); f(); best = min(best, time.perf_counter() - s)
        res.append(f"{C}x{H}²{layout} {best*1e3:.3f}")
print("  ".join(res))
