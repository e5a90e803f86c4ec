"""`python -m eval_harness compare`: broken runs beside good ones, resume, Ctrl-C, the MT-Bench call."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import copy_run, link_runs, rebase_adapter, truncate

import eval_harness.compare as compare_module
from eval_harness.cli import build_parser, main
from eval_harness.compare import CompareSettings, Comparison, compare
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
        rejudge_failed: bool = False
        verdict_regex: str | None = None

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


# --------------------------------------------------------------------------- nothing to evaluate


def _fake_run(run_dir: Path, n_params: int = 4, truncated: bool = False) -> Path:
    """A full-weights run dir discovery accepts (config.json, a valid safetensors header), with no model behind it."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_params], "data_offsets": [0, 4 * n_params]}}).encode()
    body = struct.pack("<Q", len(header)) + header + b"\0" * (4 * n_params)
    (run_dir / "model.safetensors").write_bytes(body[:-2] if truncated else body)
    return run_dir


def _tree(root: Path) -> dict:
    """Every path under root with its kind, bytes and mtime: equal snapshots mean nothing was touched."""
    return {str(p.relative_to(root)): (p.is_dir(), None if p.is_dir() else p.read_bytes(), p.stat().st_mtime_ns)
            for p in [root, *sorted(root.rglob("*"))]}


def _no_runs(kind: str, root: Path) -> Path:
    root.mkdir()
    if kind == "not-a-run":
        (root / "notes").mkdir()
        (root / "notes" / "plan.txt").write_text("train later")
    elif kind == "all-broken":
        _fake_run(root / "truncated", truncated=True)
        (root / "no-weights").mkdir()
        (root / "no-weights" / "adapter_config.json").write_text('{"base_model_name_or_path": "base"}')
    return root


@pytest.mark.parametrize("kind", ["empty", "not-a-run", "all-broken"])
def test_compare_without_a_run_stops_before_any_download_and_writes_nothing(tmp_path, kind):
    """The default tasks offline would fetch PubMedQA from the hub: nothing may be fetched, nor written."""
    runs = _no_runs(kind, tmp_path / "runs")
    before = _tree(runs)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "eval_harness", "compare", str(runs), "--device", "cpu"],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert _tree(runs) == before
    assert "Traceback" not in proc.stderr and "PubMedQA" not in proc.stderr + proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    if kind == "all-broken":
        assert last.startswith(f"compare: no run under {runs} can be evaluated: every run found has an error")
        assert "truncated/model.safetensors" in proc.stderr and "no-weights: no weights found" in proc.stderr
    else:
        assert last.startswith(f"compare: no Axolotl run found under {runs}: expected it, or folders in it, to be "
                               "Axolotl output dirs holding config.json and model.safetensors")
    assert last.endswith("nothing was evaluated or written")


# --------------------------------------------------------------------------- one vocabulary with `report`

LEADERBOARD_OPTIONS = ("--format", "--baseline", "--resamples", "--seed", "--norms")


def _option(command: str, option: str):
    sub = next(a for a in build_parser()._subparsers._group_actions).choices[command]
    return next(a for a in sub._actions if option in a.option_strings)


@pytest.mark.parametrize("option", LEADERBOARD_OPTIONS)
def test_compare_and_report_take_the_same_leaderboard_options(option):
    a, b = _option("compare", option), _option("report", option)
    fields = ("option_strings", "dest", "default", "type", "help", "metavar", "nargs", "required")
    assert {f: getattr(a, f) for f in fields} == {f: getattr(b, f) for f in fields}


@pytest.mark.parametrize("bad", [["--format", "md,pdf"], ["--resamples", "0"], ["--seed", "-1"]])
@pytest.mark.parametrize("command", ["compare", "report"])
def test_leaderboard_options_are_validated_alike(tmp_path, capsys, command, bad):
    with pytest.raises(SystemExit) as exc:
        main([command, str(tmp_path), *bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {bad[0]}" in err and ("unknown format 'pdf'" in err if bad[0] == "--format" else bad[1] in err)


def _fake_evaluate(self, outcome, task, lm_tasks, manager, lm, prefix):
    """Stands in for one (run, task) evaluation: a stored GSM8K-like result, nothing loaded."""
    value = {"full": 0.5, "lisa": 0.75}[outcome.run.name]
    result = TaskResult(run=outcome.run.name, task=task, metrics={"exact_match,strict-match": Metric(value, 0.1)},
                        n_samples={"original": 4, "effective": 4}, settings={}, seconds=0.0)
    self.store.save(result)
    outcome.results[task] = result
    return lm, False


def test_compare_writes_its_leaderboard_with_the_report_options(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    _fake_run(runs / "full")
    _fake_run(runs / "lisa")
    monkeypatch.setattr(Comparison, "_prepare_lm_eval_tasks", lambda self: ({}, None))
    monkeypatch.setattr(Comparison, "_evaluate", _fake_evaluate)
    args = ["compare", str(runs), "--tasks", "gsm8k", "--device", "cpu", "--baseline", "full", "--resamples", "50",
            "--seed", "3", "--format", "md,json"]
    assert main(args) == 0, capsys.readouterr()
    out = runs / "report"
    data = json.loads((out / "results.json").read_text())
    assert data["report"]["baseline"] == "full" and data["report"]["formats"] == ["md", "json"]
    assert data["report"]["bootstrap"] == {"resamples": 50, "seed": 3, "confidence": 0.95}
    assert {k: data["settings"][k] for k in ("baseline", "resamples", "seed", "formats", "origin")} == {
        "baseline": "full", "resamples": 50, "seed": 3, "formats": ["md", "json"], "origin": None}
    rows = {r["run"]: r for r in data["leaderboard"]}
    assert rows["lisa"]["delta_gsm8k_strict"] == pytest.approx(25.0)
    md = (out / "leaderboard.md").read_text()
    assert "Δ vs full, GSM8K strict (pp)" in md.splitlines()[0] and "(50 resamples, seed 3)" in md
    assert not (out / "index.html").exists() and not (out / "leaderboard.csv").exists()


def test_compare_refuses_a_baseline_that_names_no_run(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    _fake_run(runs / "full")
    _fake_run(runs / "lisa")
    before = _tree(runs)
    monkeypatch.setattr(Comparison, "_prepare_lm_eval_tasks", lambda self: pytest.fail("must stop before preparing tasks"))
    assert main(["compare", str(runs), "--tasks", "gsm8k", "--device", "cpu", "--baseline", "lsia"]) == 2
    assert "compare: --baseline: Unknown run 'lsia'. Did you mean 'lisa'? Available: full, lisa" in capsys.readouterr().err
    assert _tree(runs) == before
