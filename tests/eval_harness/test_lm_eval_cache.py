"""What a stored lm-eval result is reused for (the cache key), and which items --limit scores."""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from test_lm_eval import ScriptedLM

import eval_harness.benchmarks.gsm8k as gsm8k_module
import eval_harness.compare as compare_module
from eval_harness.compare import CompareSettings, Comparison
from eval_harness.discovery import Run
from eval_harness.lm_eval_runner import EvalOptions, prepare_tasks
from eval_harness.results import RunOutcome
from eval_harness.subset import choose, shares
from eval_harness.tasks import TASK_DIR


def small_gsm8k(data_dir: Path, shared_data: Path, items: int = 4) -> Path:
    """The first ``items`` GSM8K test problems and 20 training ones, in the --data-dir layout."""
    (data_dir / "gsm8k").mkdir(parents=True)
    for split, n in (("test", items), ("train", 20)):
        lines = (shared_data / "gsm8k" / f"{split}.jsonl").read_text().splitlines()[:n]
        (data_dir / "gsm8k" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return data_dir


@pytest.fixture
def comparison(shared_data, tmp_path, monkeypatch):
    """compare's own reuse-or-evaluate step on GSM8K (variant "clean", from an editable copy of our task
    files), with a scripted model that always answers 18; returns a function that runs it once."""
    from lm_eval.tasks import TaskManager

    tasks = tmp_path / "task_files"
    shutil.copytree(TASK_DIR, tasks, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(gsm8k_module, "TASK_DIR", tasks)
    # the report's tasks only: lm-eval's own index costs seconds and holds nothing this test reads
    monkeypatch.setattr(compare_module, "task_manager",
                        lambda task_dir: TaskManager(include_path=str(task_dir), include_defaults=False))
    (tmp_path / "model").mkdir()
    run = Run(name="scripted", method="Full", model_path=str(tmp_path / "model"), adapter_path=None, base_model=None,
              path=str(tmp_path / "model"))
    settings = CompareSettings(runs_dir=tmp_path, output=tmp_path / "report", tasks=["gsm8k"],
                               data_dir=small_gsm8k(tmp_path / "data", shared_data), variants={"gsm8k": "clean"})

    def run_once() -> tuple[bool, float]:
        """(whether the result was computed afresh, its strict-match score)."""
        step = Comparison(settings, log=io.StringIO())
        lm_tasks, manager = step._prepare_lm_eval_tasks()
        outcome = RunOutcome(run)
        step._lm_eval(outcome, lm_tasks["gsm8k"], manager, ScriptedLM(lambda doc: " #### 18"), "gsm8k")
        return outcome.cached == [], outcome.results["gsm8k"].metrics["exact_match,strict-match"].value

    return run_once, tasks, settings.data_dir


def test_editing_a_task_or_data_file_in_place_recomputes(comparison):
    run_once, tasks, data_dir = comparison
    first = run_once()
    assert first == (True, 0.25)  # of the first four problems only the first one's answer is 18
    assert run_once() == (False, 0.25)  # nothing changed: reused

    test_file = data_dir / "gsm8k" / "test.jsonl"
    records = [json.loads(line) for line in test_file.read_text().splitlines()]
    records[1]["answer"] = records[1]["answer"].rsplit("#### ", 1)[0] + "#### 18"
    test_file.write_text("".join(json.dumps(r) + "\n" for r in records))  # same path, new content
    assert run_once() == (True, 0.5)
    test_file.touch()  # a new mtime, the same content: still reused
    assert run_once() == (False, 0.5)

    task_file = tasks / "gsm8k_clean.yaml"
    task_file.write_text(task_file.read_text().replace('doc_to_text: "Question: {{question}}\\nAnswer:"',
                                                       'doc_to_text: "Q: {{question}}\\nA:"'))
    assert run_once()[0] is True
    assert run_once()[0] is False
    (tasks / "utils.py").write_text((tasks / "utils.py").read_text() + "\n# the Python a task names counts too\n")
    assert run_once()[0] is True


def test_cache_key_names_what_the_result_depends_on(shared_data, tmp_path):
    from lm_eval.tasks import TaskManager

    from eval_harness.lm_eval_runner import cache_key

    options = EvalOptions(max_new_tokens=512, apply_chat_template=True, fewshot_as_multiturn=True)
    (task,), task_dir = prepare_tasks(["gsm8k"], tmp_path, small_gsm8k(tmp_path / "data", shared_data), {}, options)
    key = cache_key(task, TaskManager(include_path=str(task_dir), include_defaults=False))
    assert {k: key[k] for k in ("variant", "num_fewshot", "max_new_tokens", "apply_chat_template",
                                "fewshot_as_multiturn", "backend")} == {
        "variant": "stock", "num_fewshot": 5, "max_new_tokens": 512, "apply_chat_template": True,
        "fewshot_as_multiturn": True, "backend": "lm-eval hf"}
    assert set(key["data_sha256"]) == {"train.jsonl", "test.jsonl"} and key["lm_eval_version"] == "0.4.11"
    # the budget goes into the generated YAML beside stock's stop strings, not through gen_kwargs
    generated = yaml.safe_load((task_dir / "gsm8k.yaml").read_text())
    assert generated["generation_kwargs"] == {"until": ["Question:", "</s>", "<|im_end|>"], "do_sample": False,
                                              "temperature": 0.0, "max_gen_toks": 512}
    assert task.max_new_tokens_in_yaml
    with pytest.raises(ValueError, match="fewshot_as_multiturn .* needs apply_chat_template"):
        prepare_tasks(["gsm8k"], tmp_path, tmp_path / "data", {}, EvalOptions(fewshot_as_multiturn=True))


def test_no_fewshot_or_generation_noise_from_lm_eval(shared_data, tmp_path, caplog):
    """Our own choices raise no lm-eval warnings: shots equal to the task's default and the task's own
    generation settings are not passed as overrides."""
    from lm_eval.tasks import TaskManager

    from eval_harness.lm_eval_runner import evaluate_task

    (task,), task_dir = prepare_tasks(["gsm8k"], tmp_path, small_gsm8k(tmp_path / "data", shared_data), {"gsm8k": 5})
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    with caplog.at_level("WARNING"):
        evaluate_task(ScriptedLM(lambda doc: " #### 18"), "scripted", task, manager, limit=2,
                      samples_path=tmp_path / "s.jsonl", settings={})
    noise = [r.getMessage() for r in caplog.records if "num_fewshot" in r.getMessage() or "do_sample" in r.getMessage()]
    assert noise == []


# --------------------------------------------------------------------------- --limit


def test_subset_keeps_each_strata_share_and_is_seeded():
    labels = ["yes"] * 276 + ["no"] * 169 + ["maybe"] * 55  # PubMedQA's official test file, in its order
    subset = choose(labels, 50, stratified_by="final_decision")
    assert Counter(labels[i] for i in subset.indices) == Counter(yes=28, no=17, maybe=5)
    assert subset == choose(labels, 50, stratified_by="final_decision") and list(subset.indices) == sorted(subset.indices)
    assert subset.to_json()["description"] == "subset of 50 of 500 items (seed 1234, stratified by final_decision)"
    assert choose(labels, 50, seed=7).indices != subset.indices
    assert choose(labels, 9).n == 9 and Counter(labels[i] for i in choose(labels, 9).indices)["maybe"] == 1
    assert choose(labels, 500).is_everything and choose(labels, None).describe() == "all 500 items"
    assert shares({"a": 1, "b": 1, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}
    with pytest.raises(ValueError, match="limit: got 0"):
        choose(labels, 0)
