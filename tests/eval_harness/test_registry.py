"""The benchmark registry and lm-eval groups (a local group of two tasks over local data, no hub)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_lm_eval import ScriptedLM

from eval_harness.benchmarks import (
    DEFAULT_TASKS,
    Benchmark,
    Headline,
    benchmark_for,
    get_benchmark,
    register_benchmark,
    registered,
    write_demo_data,
)
from eval_harness.benchmarks.registry import _REGISTRY, UnknownBenchmarkError
from eval_harness.lm_eval_runner import evaluate_task, prepare_tasks, task_manager
from eval_harness.report.collect import load_report_data
from eval_harness.report.summary import headline_columns
from eval_harness.results import ResultStore

ITEMS = 4  # per subtask


def test_builtins_are_registered_with_their_direction_and_fewshot():
    assert list(DEFAULT_TASKS) == registered()[:3]
    gsm8k = get_benchmark("gsm8k")
    assert gsm8k.lm_eval_task == "harness_gsm8k" and gsm8k.fewshot == 5
    assert [h.metric for h in gsm8k.headlines] == ["exact_match,strict-match", "exact_match,flexible-extract"]
    assert all(h.higher_is_better for b in registered() for h in get_benchmark(b).headlines)
    assert get_benchmark("mt_bench").lm_eval_task is None


def test_unknown_name_is_suggested_and_any_lm_eval_task_is_generic():
    with pytest.raises(UnknownBenchmarkError, match=r"Unknown benchmark 'gsm8kk'. Did you mean 'gsm8k'\? Available: gsm8k, mt_bench, pubmedqa"):
        get_benchmark("gsm8kk")
    arc = benchmark_for("arc_easy")
    assert arc.lm_eval_task == "arc_easy" and arc.headlines == (Headline("arc_easy %", ""),)


def test_one_registration_adds_a_benchmark_everywhere(monkeypatch):
    mmlu = Benchmark("mmlu_demo", "mmlu", (Headline("MMLU acc %", "acc,none"),), fewshot=5)
    monkeypatch.setitem(_REGISTRY, "mmlu_demo", mmlu)
    assert register_benchmark(mmlu) is mmlu and "mmlu_demo" in registered()
    assert [c.title for c in headline_columns(["mmlu_demo"])] == ["MMLU acc %"]
    from eval_harness.cli import build_parser

    args = build_parser().parse_args(["compare", ".", "--mmlu-demo-fewshot", "3"])
    assert args.fewshot_mmlu_demo == 3
    with pytest.raises(ValueError, match="registered twice"):
        register_benchmark(Benchmark("mmlu_demo", "mmlu", ()))


def test_demo_data_is_written_in_the_data_dir_layout(tmp_path):
    write_demo_data(tmp_path, {"gsm8k": 3, "pubmedqa": 2})
    assert len((tmp_path / "gsm8k" / "test.jsonl").read_text().splitlines()) == 3
    assert len(json.loads((tmp_path / "pubmedqa" / "test_ground_truth.json").read_text())) == 2
    assert (tmp_path / "mt_bench" / "reference_answer" / "gpt-4.jsonl").is_file()
    tasks, _ = prepare_tasks(["gsm8k", "pubmedqa"], tmp_path / "out", tmp_path, {"gsm8k": 0})
    assert [(t.lm_eval_name, t.num_fewshot) for t in tasks] == [("harness_gsm8k", 0), ("harness_pubmedqa", 0)]


def _write_group(folder: Path) -> Path:
    """A group ``local_group`` of two yes/no tasks: every answer of ``local_a`` is yes, of ``local_b`` no."""
    folder.mkdir(parents=True)
    for name, label in (("local_a", "yes"), ("local_b", "no")):
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps({"question": f"{name} item {i}?", "answer": label}) + "\n" for i in range(ITEMS)))
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({
            "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "output_type": "multiple_choice", "test_split": "test", "doc_to_text": "{{question}}",
            "doc_to_target": "answer", "doc_to_choice": ["yes", "no"],
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }))
    (folder / "local_group.yaml").write_text(yaml.safe_dump({
        "group": "local_group", "task": ["local_a", "local_b"],
        "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}],
    }))
    return folder


@pytest.mark.slow  # a real lm-eval run (scripted model), several seconds
def test_group_keeps_every_subtasks_samples_n_and_paired_tests(tmp_path):
    manager = task_manager(_write_group(tmp_path / "tasks"))
    (task,), _ = prepare_tasks(["local_group"], tmp_path / "work", None, {})
    store = ResultStore(tmp_path / "report")
    for run, label in (("always-yes", "yes"), ("always-no", "no")):
        result = evaluate_task(ScriptedLM(lambda doc, label=label: label), run, task, manager, limit=None,
                               max_new_tokens=8, samples_path=store.samples_path(run, task.name), settings={})
        store.save(result)
        assert result.n_samples == {"original": 2 * ITEMS, "effective": 2 * ITEMS}
        assert result.metrics["acc,none"].value == pytest.approx(0.5)
        assert result.details["subtasks"] == ["local_a", "local_b"]
        samples = [json.loads(line) for line in store.samples_path(run, task.name).read_text().splitlines()]
        assert sorted({(s["task"], s["doc_id"]) for s in samples}) == [(t, i) for t in ("local_a", "local_b") for i in range(ITEMS)]
    data = load_report_data(tmp_path / "report")
    row = data.run("always-yes").accuracy["local_group %"]
    assert row.n == 2 * ITEMS and len(row.per_sample) == 2 * ITEMS
    (test,) = [t for t in data.comparisons if t.benchmark == "local_group %"]
    assert test.n == 2 * ITEMS and test.diff == pytest.approx(0.0)  # +1 on local_a, -1 on local_b
