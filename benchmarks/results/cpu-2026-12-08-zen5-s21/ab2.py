# In-process A/B: AF_EXP_SHORT8 (8-row x*ca) and AF_EXP_SHORT8_DX (8-row dx) inside SE / ECA, one thread.
import os, sys, time, torch, attnfused
torch.set_num_threads(1)
from attnfused.bench.timing import keep_freed_memory; keep_freed_memory()
name, var, mode = sys.argv[1], sys.argv[2], sys.argv[3]  # var: env var to flip; mode fwd|fwdbwd
rounds, steps = 40, 50
torch.manual_seed(0)
B, C, H = 8, 2048, 7
blk = {"eca": lambda: attnfused.ECABlock(C), "se": lambda: attnfused.SEBlock("avg", C, 16),
       "semax": lambda: attnfused.SEBlock("max", C, 16)}[name]()
x = torch.randn(B, C, H, H, requires_grad=True)
dy = torch.randn(B, C, H, H)
def one():
    if mode == "fwd":
        with torch.no_grad(): blk(x)
    else:
        y = blk(x); y.backward(dy); x.grad = None
        for p in blk.parameters(): p.grad = None
res = {"off": [], "on": []}
for r in range(rounds):
    for m in (("off", "on") if r % 2 == 0 else ("on", "off")):
        if m == "on": os.environ[var] = "1"
        else: os.environ.pop(var, None)
        for _ in range(5): one()
        t = time.perf_counter()
        for _ in range(steps): one()
        res[m].append((time.perf_counter() - t) / steps * 1e3)
q = lambda v, f: sorted(v)[int(f * (len(v) - 1))]
print(name, var, mode, " ".join(f"{k} p10 {q(v, .1):.4f} p25 {q(v, .25):.4f} p50 {q(v, .5):.4f}" for k, v in res.items()),
      "on/off p25 %.3f" % (q(res["on"], .25) / q(res["off"], .25)))
