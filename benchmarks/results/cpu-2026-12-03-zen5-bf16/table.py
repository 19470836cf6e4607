import json, sys
stages = [(256, 56), (512, 28), (1024, 14), (2048, 7)]
names = {"se_avg": "SE avg", "se_max": "SE max", "eca": "ECA", "cbam_fc": "CBAM FC", "cbam_conv": "CBAM Conv"}
def f(x): return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"
runs = {L: {(r['block'], r['channels'], r['height'], r['mode'], r['impl']): r['ms'] for r in json.load(open(f"{sys.argv[1]}/{L}/bench-cpu-x86-64-2026-12-03.json"))['micro']} for L in ("nchw", "channels_last")}
print("| block | NCHW forward | NCHW fwd+bwd | channels_last forward | channels_last fwd+bwd |")
print("|---|---|---|---|---|")
for b, nm in names.items():
    cells = []
    for L in ("nchw", "channels_last"):
        for mode in ("fwd", "fwdbwd"):
            cells.append(" · ".join("/".join(f(runs[L][(b, c, h, mode, i)]) for i in ("eager", "compile:default", "attnfused:cpu")) for c, h in stages))
    print(f"| {nm} | " + " | ".join(cells) + " |")
