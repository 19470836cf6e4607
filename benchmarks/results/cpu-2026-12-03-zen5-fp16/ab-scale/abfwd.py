import sys, time, torch, attnfused as af
torch.manual_seed(0)
torch.set_num_threads(2)
dt = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[sys.argv[1]]
out = []
for C, H in [(256, 56), (512, 28), (2048, 7)]:
    for layout in ("nchw", "cl"):
        x = torch.randn(8, C, H, H, dtype=dt)
        if layout == "cl": x = x.to(memory_format=torch.channels_last)
        for name, m in {"se_avg": af.SEBlock("avg", C, 16), "eca": af.ECABlock(C)}.items():
            m = m.to(dt).eval()
            with torch.no_grad(), af.use_backend("cpu"):
                for _ in range(3): m(x)
                ts = []
                for _ in range(40):
                    s = time.perf_counter(); m(x); ts.append(time.perf_counter() - s)
            ts.sort()
            out.append(f"{H}{layout[0]}-{name}:{ts[len(ts)//2]*1e3:.3f}")
print(" ".join(out))
