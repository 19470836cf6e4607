"""The bench CLI runs end to end on a tiny configuration and writes its results."""

from __future__ import annotations

import json

import pytest
import torch

from attnfused.bench.cli import main


def test_bench_quick(tmp_path, capsys):
    # --malloc default: the allocator setting would outlive this test in the pytest process.
    rc = main(["--quick", "--no-traffic", "--compile-modes", "default", "--out", str(tmp_path), "--tag", "ci",
               "--malloc", "default"])
    assert rc == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert any(f.endswith("-ci.json") for f in files) and any(f.endswith("-ci.csv") for f in files)
    data = json.loads(next(tmp_path.glob("*-ci.json")).read_text())
    assert data["meta"]["torch"] and data["meta"]["device"]
    impls = {r["impl"] for r in data["micro"]}
    assert {"eager", "compile:default"} <= impls
    assert all(r["error"] is None and r["ms"] > 0 for r in data["micro"])
    assert "eager" in capsys.readouterr().out
    assert data["meta"]["malloc"] == "as the process found it"
    assert isinstance(data["meta"]["cpu"], dict)


@pytest.mark.parametrize("argv, message", [
    (["--shape", "0,4,4"], "C, H and W >= 1"),
    (["--shape", "4,4"], "three integers"),
    (["--batch", "-1"], "integer >= 1"),
    (["--e2e-batch", "0"], "integer >= 1"),
    (["--e2e-seconds", "-1"], "finite number >= 0"),
    (["--e2e-seconds", "nan"], "finite number >= 0"),
    (["--quick", "--shape", "64,4,4"], "--quick sets its own shape"),
    (["--blocks", "se_avg", "eca", "--shape", "64,4,4", "8,4,4"], "se_avg at C=8: ratio=16 leaves no hidden units"),
])
def test_bench_refuses_bad_arguments_before_running(argv, message, capsys):
    """Bad values end the run at once with argparse's usage error, not a traceback midway."""
    with pytest.raises(SystemExit) as e:
        main(argv + ["--no-traffic", "--malloc", "default"])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_cpu_facts_from_linux(tmp_path):
    """The CPU runs' metadata: the first processor's vendor, family, model and name, and cpu0's
    caches; nothing where Linux's files are absent."""
    from helpers import write_fake_caches

    from attnfused.bench.report import cpu_facts

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
                    "model name\t: AMD EPYC\n\nprocessor\t: 1\nvendor_id\t: Other\n")
    caches = tmp_path / "cache"
    write_fake_caches(caches, {"index0": ("1", "Data", "48K"), "index1": ("1", "Instruction", "32K"),
                               "index2": ("2", "Unified", "1024K"), "index3": ("3", "Unified", "32768K")})
    assert cpu_facts(info, caches) == {
        "vendor": "AuthenticAMD", "family": "26", "model": "2", "model_name": "AMD EPYC",
        "caches": {"L1d": "48K", "L1i": "32K", "L2": "1024K", "L3": "32768K"},
    }
    assert cpu_facts(tmp_path / "absent", tmp_path / "absent") == {}
    # the summary's heading names the machine
    from attnfused.bench.summary import heading

    meta = {"device": "CPU (x86_64)", "cpu": cpu_facts(info, caches)}
    assert heading(meta, "r.json").startswith("**CPU (x86_64): AMD EPYC family 26 model 2, L2 1024K, L3 32768K**")
    assert heading({"device": "NVIDIA H200"}, "r.json").startswith("**NVIDIA H200**")


def test_bench_keeps_freed_memory_on_glibc():
    """The CPU timing default (--malloc keep) takes effect, in a process of its own."""
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("needs glibc")
    code = "from attnfused.bench.timing import keep_freed_memory as k; print(k())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "M_MMAP_MAX=0" in out.stdout, out.stdout + out.stderr


def test_e2e_resnet50_places_one_block_per_bottleneck():
    """The end-to-end models: the block sits after bn3 of all 16 bottlenecks, and the model runs."""
    pytest.importorskip("torchvision")
    import torch

    import attnfused
    from attnfused.bench.e2e import resnet50_with

    for name, cls in (("se", attnfused.SEBlock), ("eca", attnfused.ECABlock), ("cbam", attnfused.CBAMBlock)):
        model = resnet50_with(name).eval()
        blocks = [m for m in model.modules() if isinstance(m, cls)]
        assert len(blocks) == 16
        assert all(isinstance(b.bn3[1], cls) and b.bn3[1] is not None for layer in
                   (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer)
    with torch.no_grad(), attnfused.use_backend("reference"):
        assert resnet50_with("cbam").eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_summary_renders_committed_results_and_failures(tmp_path, capsys):
    """attnfused.bench.summary (the README's tables from a run's JSON) on the committed CPU run:
    the numbers the README quotes come out as stored; a failed row shows its error; no results: rc 2."""
    from pathlib import Path

    from attnfused.bench import summary

    run = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "cpu-2026-12-01"
    text = summary.summarize(run)
    assert "**CPU (x86_64)**, 2026-12-01" in text and "float32, nchw, batch 8" in text
    assert "| se_avg | 256x56x56 | 1.761 | 1.726 | 1.761 |" in text and "| 2.68 / 2.72 / 55 |" in text
    data = json.loads(next(run.glob("*.json")).read_text())
    rows = [r for r in data["micro"] if r["block"] == "eca" and r["channels"] == 2048]
    rows[-1] = {**rows[-1], "ms": None, "speedup_vs_eager": None, "error": "RuntimeError: no kernel"}
    e2e = json.loads(next((run / "e2e").glob("*.json")).read_text())["e2e"][:2]
    (tmp_path / "run.json").write_text(json.dumps({"meta": data["meta"], "micro": rows, "e2e": e2e}))
    text = summary.summarize(tmp_path)
    assert "failed: RuntimeError" in text and text.count("\n| eca |") == 1
    assert "| plain | eager | train | fp32 | 8 |" in text
    assert summary.main([str(tmp_path), "--out", str(tmp_path / "summary.md")]) == 0
    assert (tmp_path / "summary.md").read_text() == text
    gate = {"B": 32, "n": 2, "C": 2048, "R": 128, "fwd_macs": 1, "bwd_macs": 1, "max_abs_diff": 3e-7,
            "fc_gate_fwd_ms": 0.0123, "aten_fwd_ms": 0.0456, "fc_gate_bwd_ms": 0.0234, "aten_bwd_ms": 0.0567}
    (tmp_path / "fc_gate.json").write_text(json.dumps({"meta": {"date": "2026-12-02T00:00:00+00:00"}, "rows": [gate]}))
    assert "| 32 | 2 | 2048 | 128 | 0.0123 | 0.0456 | 0.0234 | 0.0567 | 3.0e-07 |" in summary.summarize(tmp_path)
    (tmp_path / "empty").mkdir()
    assert summary.main([str(tmp_path / "empty")]) == 2
    assert "no bench results" in capsys.readouterr().err


def test_e2e_rows_are_timed_in_rotating_rounds(monkeypatch):
    """e2e.run times one (precision, mode)'s rows together: each round runs every row once, starting
    one row later than the round before; a row's ms is the median of its rounds; the overhead share
    comes from rows timed side by side, and is "noise" where the blocks' cost is within the spread."""
    import statistics

    from torch import nn

    from attnfused.bench import e2e

    assert e2e._plain_impls(["attnfused"]) == ["eager"] and e2e._plain_impls(["compile"]) == ["compile"]
    assert e2e._plain_impls(["eager", "compile+attnfused"]) == ["eager", "compile"]

    def tiny(name):
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        model.tag = name
        return model

    order = []
    cost = {("plain", "reference"): 100.0, ("se", "reference"): 150.0, ("se", "auto"): 120.0,
            ("eca", "reference"): 100.5, ("eca", "auto"): 100.0}

    def fake_step_fn(model, x, target, mode, precision, backend):
        def step():
            return None
        step.key = (model.tag, backend)
        return step

    given = []

    def fake_timed(step, device):
        order.append(step.key)
        given.append(cost[step.key] + (len(order) % 3))  # jitter 0-2 ms: IQR 1-2 ms per row
        return given[-1]

    monkeypatch.setattr(e2e, "resnet50_with", tiny)
    monkeypatch.setattr(e2e, "_step_fn", fake_step_fn)
    monkeypatch.setattr(e2e, "_timed_step", fake_timed)
    rows = e2e.run(torch.device("cpu"), ["plain", "se", "eca"], ["eager", "attnfused"], ["infer"], ["fp32"],
                   batch=1, image=2, progress=lambda s: None, min_time_s=0.0)
    keys = [("plain", "reference"), ("se", "reference"), ("se", "auto"), ("eca", "reference"), ("eca", "auto")]
    n = len(keys)
    warm, timed = order[:2 * n], order[2 * n:]  # two warm-up steps row by row (no peak probe on CPU)
    assert warm == [k for k in keys for _ in range(2)]
    assert len(timed) == e2e.MIN_ROUNDS * n
    for r in range(e2e.MIN_ROUNDS):
        assert timed[r * n:(r + 1) * n] == keys[r % n:] + keys[:r % n]
    by = {(r["model"], r["impl"]): r for r in rows}
    assert all(r["rounds"] == e2e.MIN_ROUNDS and r["error"] is None for r in rows)
    plain = sorted(t for k, t in zip(timed, given[2 * n:]) if k == keys[0])
    assert by["plain", "eager"]["ms"] == statistics.median(plain) and by["plain", "eager"]["ms_iqr"] <= 2
    removed = by["se", "attnfused"]["overhead_removed"]
    assert 0.55 < removed < 0.65 and by["se", "eager"]["overhead_removed"] == 0
    assert by["eca", "attnfused"]["overhead_removed"] is None and by["eca", "attnfused"]["overhead_note"] == "noise"
    text = e2e.table(rows)
    assert "noise" in text and "IQR" in text


def test_e2e_deadline_skips_rows_not_built(monkeypatch):
    """Past the deadline no row is built: each is reported as skipped, none is timed."""
    from attnfused.bench import e2e

    def boom(*a, **k):
        raise AssertionError("a skipped row was built")

    monkeypatch.setattr(e2e, "resnet50_with", boom)
    rows = e2e.run(torch.device("cpu"), ["plain", "se"], ["eager"], ["train"], ["fp32"], batch=1, image=2,
                   progress=lambda s: None, deadline=0.0)
    assert [(r["model"], r["impl"], r["error"]) for r in rows] == [
        ("plain", "eager", "skipped: time budget"), ("se", "eager", "skipped: time budget")]


def test_e2e_deadline_stops_the_rounds(monkeypatch):
    """Rows built before the deadline are timed; once it passes no new round starts (round 0 always
    runs, so each row gets one step)."""
    import time

    from torch import nn

    from attnfused.bench import e2e

    calls = []

    def fake_timed(step, device):
        calls.append(step)
        if len(calls) > 4:  # past the two warm-up steps of each row: each measured step takes 0.6 s
            time.sleep(0.6)
        return 1.0

    monkeypatch.setattr(e2e, "resnet50_with", lambda name: nn.Sequential(nn.Flatten(), nn.Linear(12, 3)))
    monkeypatch.setattr(e2e, "_timed_step", fake_timed)
    rows = e2e.run(torch.device("cpu"), ["plain", "se"], ["eager"], ["infer"], ["fp32"], batch=1, image=2,
                   progress=lambda s: None, deadline=time.monotonic() + 1.0, min_time_s=0.0)
    assert [(r["model"], r["error"], r["rounds"]) for r in rows] == [("plain", None, 1), ("se", None, 1)]


def test_e2e_runs_real_resnet50_steps():
    """The real path once, tiny: plain and SE ResNet-50, eager and attnfused, a training step each."""
    pytest.importorskip("torchvision")
    from attnfused.bench import e2e

    rows = e2e.run(torch.device("cpu"), ["plain", "se"], ["eager", "attnfused"], ["train"], ["fp32"],
                   batch=2, image=32, progress=lambda s: None, min_time_s=0.0)
    assert [(r["model"], r["impl"]) for r in rows] == [("plain", "eager"), ("se", "eager"), ("se", "attnfused")]
    assert all(r["error"] is None and r["ms"] > 0 and r["rounds"] == e2e.MIN_ROUNDS for r in rows)


def test_cpu_micro_rows_take_turns(monkeypatch):
    """On CPU a group's contenders are timed in CPU_ROUNDS rotating rounds; each row's ms is the
    median of its rounds (and the speed-ups come from those medians)."""
    import statistics

    from attnfused.bench import micro

    made = micro._make_call

    def tagged(m, impl, x, dy, mode):
        call = made(m, impl, x, dy, mode)

        def run():
            return call()
        run.impl = impl.name
        return run

    order, given = [], {}

    def fake_time_ms(call, device, min_time_s=1.0, max_reps=100):
        assert min_time_s == micro.CPU_ROUND_S
        order.append(call.impl)
        given.setdefault(call.impl, []).append((2.0 if call.impl == "eager" else 1.0) + len(order) % 4)
        return given[call.impl][-1]

    monkeypatch.setattr(micro, "_make_call", tagged)
    monkeypatch.setattr(micro, "time_ms", fake_time_ms)
    impls = micro.default_impls(torch.device("cpu"), ["cpu"], [])
    rows = micro.run_group("se_avg", 2, (32, 3, 3), torch.float32, "nchw", "fwd", impls, torch.device("cpu"),
                           10.0, lambda s: None)
    names = [i.name for i in impls]
    assert names == ["eager", "attnfused:cpu"]
    assert order == [names[(r + i) % 2] for r in range(micro.CPU_ROUNDS) for i in range(2)]
    by = {r.impl: r for r in rows}
    for name in names:
        assert by[name].ms == statistics.median(given[name]) and by[name].error is None
    assert by["attnfused:cpu"].speedup_vs_eager == by["eager"].ms / by["attnfused:cpu"].ms
