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
