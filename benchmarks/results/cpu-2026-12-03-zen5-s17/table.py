import json, sys
D = sys.argv[1]
runs = [json.load(open(f'{D}/{p}bench-cpu-x86-64-2026-12-03.json')) for p in ('', 'run-b/', 'run-c/')]
def ms(run):
    out = {}
    for r in run['micro']:
        out[(r['block'], r['channels'], r['height'], r['mode'], r['impl'])] = r['ms']
    return out
M = [ms(r) for r in runs]
stages = [(256, 56), (512, 28), (1024, 14), (2048, 7)]
names = {"se_avg": "SE avg", "se_max": "SE max", "eca": "ECA", "cbam_fc": "CBAM FC", "cbam_conv": "CBAM Conv"}
def f(x): return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"
print("| block | forward ms, 256×56² · 512×28² · 1024×14² · 2048×7²: eager / compile / `cpu` | forward vs eager, 3 runs | fwd+bwd ms: eager / compile / `cpu` | fwd+bwd vs eager, 3 runs |")
print("|---|---|---|---|---|")
for b, nm in names.items():
    cells = []
    for mode in ("fwd", "fwdbwd"):
        a = " · ".join("/".join(f(M[0][(b, c, h, mode, i)]) for i in ("eager", "compile:default", "attnfused:cpu")) for c, h in stages)
        sp = []
        for c, h in stages:
            v = [m[(b, c, h, mode, "eager")] / m[(b, c, h, mode, "attnfused:cpu")] for m in M]
            sp.append(f"{min(v):.2f}–{max(v):.2f}")
        cells += [a, " · ".join(sp)]
    print(f"| {nm} | " + " | ".join(cells) + " |")
