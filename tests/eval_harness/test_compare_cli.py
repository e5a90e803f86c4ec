"""`python -m eval_harness compare`: broken runs beside good ones, resume, Ctrl-C, the MT-Bench call."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import copy_run, link_runs, rebase_adapter, truncate

import eval_harness.compare as compare_module
from eval_harness.cli import main
from eval_harness.compare import CompareSettings, compare
from eval_harness.results import Metric, TaskResult

SECRET = "sk-test-never-written-anywhere"


def run_cli(runs: Path, shared_data: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "eval_harness", "compare", str(runs), "--tasks", "gsm8k,pubmedqa",
           "--limit", "2", "--gsm8k-fewshot", "1", "--pubmedqa-fewshot", "1", "--max-new-tokens", "8",
           "--data-dir", str(shared_data), "--device", "cpu", "--batch-size", "2", *extra]
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[2])


def test_cli_evaluates_good_runs_flags_bad_ones_and_resumes(axolotl_runs, shared_data, tmp_path, other_base):
    runs = link_runs(tmp_path / "runs", axolotl_runs, ("full", "lora"))
    truncate(copy_run(axolotl_runs / "full", runs / "truncated") / "model.safetensors", 4096)
    rebase_adapter(copy_run(axolotl_runs / "lora", runs / "lora-other"), other_base)
    (runs / "notes").mkdir()
    (runs / "notes" / "plan.txt").write_text("not a run")

    proc = run_cli(runs, shared_data)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]
    report = runs / "report"  # the default --output
    data = json.loads((report / "results.json").read_text())
    assert data["schema_version"] == 2 and data["complete"] is True
    # compare ends by publishing the leaderboard through the report code
    assert [r["run"] for r in data["leaderboard"]] == ["Vanilla", "full", "lora", "lora-other", "truncated"]
    assert all((report / name).is_file() for name in ("index.html", "leaderboard.md", "leaderboard.csv"))
    by_name = {r["name"]: r for r in data["runs"]}
    assert set(by_name) == {"Vanilla", "full", "lora", "truncated", "lora-other"}
    for name in ("Vanilla", "full", "lora"):
        results = by_name[name]["results"]
        assert set(results) == {"gsm8k", "pubmedqa"}, name
        assert results["gsm8k"]["n_samples"]["effective"] == 2
        assert set(results["gsm8k"]["metrics"]) >= {"exact_match,strict-match", "exact_match,flexible-extract"}
        assert results["pubmedqa"]["metrics"]["acc,none"]["stderr"] is not None
        assert Path(results["pubmedqa"]["files"]["samples"]).exists()
    assert by_name["lora"]["adapter_path"] and by_name["lora"]["method"] == "LoRA"
    for broken in ("truncated", "lora-other"):
        assert by_name[broken]["results"] == {} and by_name[broken]["errors"]
    # clear messages: the file, what is wrong; and the summary table on stdout
    assert "truncated/model.safetensors" in log and "truncated or corrupt" in log
    assert "notes: not an Axolotl output dir" in log
    assert "lora-other" in log and "differs from the other runs'" in log
    table = proc.stdout.split("\n\n")[0]
    assert "GSM8K strict %" in table and "PubMedQA acc %" in table
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["Vanilla", "full", "lora", "lora-other", "truncated"]
    assert not any(SECRET in p.read_text(errors="replace") for p in report.rglob("*") if p.is_file())

    # resume: only the removed result is recomputed; the report dir is not taken for a run
    before = {p: p.stat().st_mtime_ns for p in (report / "results").rglob("*.json")}
    (report / "results" / "lora" / "pubmedqa.json").unlink()
    again = run_cli(runs, shared_data)
    assert again.returncode == 1
    evaluating = [line for line in again.stderr.splitlines() if ": evaluating" in line]
    assert len(evaluating) == 1 and "lora / pubmedqa" in evaluating[0], again.stderr[-3000:]
    assert again.stderr.count("done before") == 5
    assert "report: not an Axolotl output dir" not in again.stdout + again.stderr
    removed = report / "results" / "lora" / "pubmedqa.json"
    assert removed.exists()
    assert {p: p.stat().st_mtime_ns for p in before if p != removed} == {p: m for p, m in before.items() if p != removed}


class FakeEvaluator:
    """Stands in for model loading and lm-eval: counts calls, can raise Ctrl-C on the n-th one."""

    def __init__(self, interrupt_at: int | None = None):
        self.calls: list[tuple[str, str]] = []
        self.interrupt_at = interrupt_at

    def load_lm(self, run, **_):
        return object()

    def evaluate_task(self, lm, run_name, task, manager, *, limit, max_new_tokens, samples_path, settings):
        self.calls.append((run_name, task.name))
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        return TaskResult(run=run_name, task=task.name, metrics={"acc,none": Metric(0.25 * len(self.calls), 0.1)},
                          n_samples={"original": 10, "effective": limit}, settings=settings, seconds=0.0)


def settings_for(runs: Path, shared_data: Path, **kw) -> CompareSettings:
    return CompareSettings(runs_dir=runs, output=runs / "report", data_dir=shared_data,
                           **{"tasks": ["gsm8k", "pubmedqa"], "limit": 3, **kw})


def test_ctrl_c_keeps_finished_results_and_resume_skips_them(axolotl_runs, shared_data, tmp_path, monkeypatch, capsys):
    runs = link_runs(tmp_path / "runs", axolotl_runs, ("full", "lora"))
    fake = FakeEvaluator(interrupt_at=4)
    monkeypatch.setattr(compare_module, "load_lm", fake.load_lm)
    monkeypatch.setattr(compare_module, "evaluate_task", fake.evaluate_task)
    assert compare(settings_for(runs, shared_data)) == 130
    data = json.loads((runs / "report" / "results.json").read_text())
    assert data["complete"] is False and any("interrupted" in p for p in data["problems"])
    saved = {(r["name"], t) for r in data["runs"] for t in r["results"]}
    assert saved == set(fake.calls[:3])

    resumed = FakeEvaluator()
    monkeypatch.setattr(compare_module, "evaluate_task", resumed.evaluate_task)
    assert compare(settings_for(runs, shared_data)) == 0
    all_pairs = {(r, t) for r in ("Vanilla", "full", "lora") for t in ("gsm8k", "pubmedqa")}
    assert set(resumed.calls) == all_pairs - saved and len(resumed.calls) == 3

    changed = FakeEvaluator()  # another --limit is another result: nothing is reused
    monkeypatch.setattr(compare_module, "evaluate_task", changed.evaluate_task)
    assert compare(settings_for(runs, shared_data, limit=4)) == 0
    assert set(changed.calls) == all_pairs
    assert "Vanilla" in capsys.readouterr().out


def test_chat_benchmark_call_interface(axolotl_runs, shared_data, tmp_path, monkeypatch):
    """compare hands each run to eval_harness.mt_bench.run_mt_bench as agreed (a stub here)."""

    @dataclasses.dataclass
    class JudgeSettings:
        model: str
        base_url: str | None = None
        repeats: int = 1
        concurrency: int = 4

    calls = []

    def run_mt_bench(**kwargs):
        calls.append(kwargs)
        score = 5.0 + len(calls)
        return {"judged": kwargs["judge"] is not None, "turn1": score, "turn2": score, "overall": score,
                "n_questions": kwargs["limit"], "parse_failures": 0, "per_category": {}, "template": "stub",
                "answers_file": str(kwargs["out_dir"] / f"{kwargs['model_id']}.jsonl"), "judgment_file": None}

    stub = types.ModuleType("eval_harness.mt_bench")
    stub.JudgeSettings, stub.run_mt_bench = JudgeSettings, run_mt_bench
    monkeypatch.setitem(sys.modules, "eval_harness.mt_bench", stub)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    runs = link_runs(tmp_path / "runs", axolotl_runs, ("full", "lora"))
    settings = settings_for(runs, shared_data, tasks=["mt_bench"], judge_model="gpt-4", judge_repeats=2, limit=4)
    assert compare(settings) == 0
    by_model = {c["model_id"]: c for c in calls}
    assert list(by_model) == ["Vanilla", "full", "lora"]
    base = by_model["Vanilla"]["model_path"]
    assert by_model["lora"]["model_path"] == base and by_model["lora"]["adapter_path"] == str((runs / "lora").resolve())
    assert by_model["full"]["adapter_path"] is None and by_model["full"]["model_path"] != base
    assert by_model["full"]["mt_bench_dir"] == shared_data / "mt_bench"
    assert by_model["full"]["judge"] == JudgeSettings(model="gpt-4", repeats=2)
    data = json.loads((runs / "report" / "results.json").read_text())
    scores = {r["name"]: r["results"]["mt_bench"]["metrics"]["overall"]["value"] for r in data["runs"]}
    assert scores == {"Vanilla": 6.0, "full": 7.0, "lora": 8.0}
    assert SECRET not in (runs / "report" / "results.json").read_text()
    assert compare(settings) == 0 and len(calls) == 3  # cached


@pytest.mark.parametrize("bad", [["--method", "lora"], ["--set", "lora=r:8"], ["--limit", "0"], ["--batch-size", "x"]])
def test_bad_flags_exit_with_usage_error(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(tmp_path), "--tasks", "gsm8k", *bad])
    assert exc.value.code == 2
    assert bad[0] in capsys.readouterr().err
