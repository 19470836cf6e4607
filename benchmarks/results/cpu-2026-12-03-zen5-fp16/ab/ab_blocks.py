"""One process: time blocks under a given backend/dtype; print ms medians and a checksum of outputs."""
import sys, time, statistics, torch, attnfused as af
torch.manual_seed(0)
dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[sys.argv[1]]
backend = sys.argv[2]
shapes = [(512, 28, 28), (256, 56, 56), (2048, 7, 7)]
def blocks(C):
    return {"se_avg": af.SEBlock("avg", C, 16), "se_max": af.SEBlock("max", C, 16), "eca": af.ECABlock(C),
            "cbam_fc": af.CBAMBlock("FC", 7, C, 16), "cbam_conv": af.CBAMBlock("Conv", 7, C, gamma=2, b=1)}
def t(f, reps=15):
    f(); f()
    ts = []
    for _ in range(reps):
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    return statistics.median(ts) * 1e3
torch.set_num_threads(2)
for C, H, W in shapes:
    for layout in ("nchw", "cl"):
        x0 = torch.randn(8, C, H, W, dtype=dtype)
        if layout == "cl": x0 = x0.to(memory_format=torch.channels_last)
        for name, m in blocks(C).items():
            m = m.to(dtype)
            x = x0.detach().requires_grad_()
            with af.use_backend(backend):
                y = m(x)
                fwd = t(lambda: m(x))
                g = torch.randn_like(y)
                def fb():
                    x.grad = None
                    m.zero_grad(set_to_none=True)
                    m(x).backward(g)
                fb_t = t(fb, 9)
                y = m(x); x.grad = None; y.backward(g)
            print(f"{C}x{H}x{W} {layout:4s} {name:9s} fwd {fwd:8.3f} fb {fb_t:8.3f} sum {y.float().sum().item():.6e} {x.grad.float().abs().sum().item():.6e}", flush=True)
