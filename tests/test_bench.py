"""The bench CLI runs end to end on a tiny configuration and writes its results."""

from __future__ import annotations

import json

from attnfused.bench.cli import main


def test_bench_quick(tmp_path, capsys):
    rc = main(["--quick", "--no-traffic", "--compile-modes", "default", "--out", str(tmp_path), "--tag", "ci"])
    assert rc == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert any(f.endswith("-ci.json") for f in files) and any(f.endswith("-ci.csv") for f in files)
    data = json.loads(next(tmp_path.glob("*-ci.json")).read_text())
    assert data["meta"]["torch"] and data["meta"]["device"]
    impls = {r["impl"] for r in data["micro"]}
    assert {"eager", "compile:default"} <= impls
    assert all(r["error"] is None and r["ms"] > 0 for r in data["micro"])
    assert "eager" in capsys.readouterr().out
