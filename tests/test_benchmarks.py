"""Smoke test of benchmarks/compare_methods.py at toy size: it runs, and its JSON says what it should."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "compare_methods.py"


def test_compare_methods_toy_run(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, str(SCRIPT), "--hidden", "64", "--layers", "6", "--vocab", "256", "--seq", "16",
           "--batch", "2", "--steps", "8", "--gamma", "1", "--interval", "2", "--rank", "4",
           "--methods", "ours-release,ours-keep", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((out / "results.json").read_text())
    assert report["spec"]["layers"] == 6 and report["command"].startswith("python benchmarks/compare_methods.py")
    results = report["results"]
    assert set(results) == {"ours-release", "ours-keep"}
    for r in results.values():
        for key in ("peak_rss_bytes", "param_bytes", "grad_bytes", "optimizer_bytes", "trainable_params",
                    "median_step_seconds", "switch_share_of_period"):
            assert r[key] > 0, f"{r['method']}: {key} = {r[key]!r}"
        assert len(r["step_seconds"]) == 8 and r["switches"] == 4
    release, keep = results["ours-release"], results["ours-keep"]
    # release never holds more than E + H + gamma layers; keep accumulates every layer ever sampled
    assert release["peak_optimizer_bytes"] == release["adamw_bound_eh_gamma_bytes"]
    assert release["peak_optimizer_bytes"] < keep["peak_optimizer_bytes"]
    targets = {t["target"] for t in report["targets"]}
    assert any("AdamW bound" in t for t in targets)
    assert "| ours-release |" in (out / "results.md").read_text()
    assert (out / "results.png").stat().st_size > 0
