"""The bench CLI runs end to end on a tiny configuration and writes its results."""

from __future__ import annotations

import json

import pytest

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
