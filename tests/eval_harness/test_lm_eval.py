"""GSM8K and PubMedQA through lm-eval with our task YAMLs and the local data in ../shared/data."""

from __future__ import annotations

import json
import re

import pytest
from lm_eval.api.model import LM

from eval_harness.discovery import VANILLA, discover_runs
from eval_harness.lm_eval_runner import check_task_names, evaluate_task, load_lm, prepare_tasks, task_manager
from eval_harness.subset import choose

FEWSHOT = {"gsm8k": 1, "pubmedqa": 1}


class ScriptedLM(LM):
    """Answers from the document itself, so the score the YAML computes is known in advance."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer  # doc -> generated text, or doc -> the label to prefer

    def generate_until(self, requests):
        return [self.answer(req.doc) for req in requests]

    def loglikelihood(self, requests):
        return [(0.0, True) if req.args[1].strip() == self.answer(req.doc) else (-5.0, False) for req in requests]

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError


def final_number(doc) -> str:
    return re.search(r"#### (\S+)$", doc["answer"]).group(1).replace(",", "")


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    tasks, task_dir = prepare_tasks(["gsm8k", "pubmedqa"], out, shared_data, FEWSHOT)
    manager = task_manager(task_dir)
    assert check_task_names(tasks, manager) == []
    return out, {t.name: t for t in tasks}, manager


def score(lm, task, manager, out, limit=6):
    return evaluate_task(lm, "scripted", task, manager, limit=limit, samples_path=out / f"{task.name}.jsonl",
                         settings={})


@pytest.mark.parametrize(
    "answer, strict, flexible",
    [
        (lambda doc: " " + doc["answer"], 1.0, 1.0),  # the reference solution itself
        (lambda doc: f" She makes ${int(final_number(doc)):,} in all.", 0.0, 1.0),  # right number, no "####"
        (lambda doc: f" #### {int(final_number(doc)) + 1}", 0.0, 0.0),  # wrong number
    ],
)
def test_gsm8k_filters(prepared, answer, strict, flexible):
    out, tasks, manager = prepared
    result = score(ScriptedLM(answer), tasks["gsm8k"], manager, out)
    assert result.metrics["exact_match,strict-match"].value == strict
    assert result.metrics["exact_match,flexible-extract"].value == flexible
    assert result.n_samples == {"original": 1319, "effective": 6}


def test_pubmedqa_scores_the_official_test_split(prepared, shared_data):
    out, tasks, manager = prepared
    src = shared_data / "pubmedqa"
    pool = json.loads((src / "ori_pqal.json").read_text())
    truth = json.loads((src / "test_ground_truth.json").read_text())
    splits = {name: [json.loads(line) for line in (out / "data" / "pubmedqa" / f"{name}.jsonl").read_text().splitlines()]
              for name in ("test", "train", "validation")}
    assert splits["test"] == [{k: pool[p].get(k) for k in splits["test"][0]} for p in truth]
    assert [d["final_decision"] for d in splits["test"]] == list(truth.values())
    assert (len(splits["train"]), len(splits["validation"])) == (450, 50)  # fold 0, the exemplar pool
    test_questions = {pool[p]["QUESTION"] for p in truth}
    assert not any(d["QUESTION"] in test_questions for d in splits["train"] + splits["validation"])

    right = score(ScriptedLM(lambda doc: doc["final_decision"]), tasks["pubmedqa"], manager, out, limit=9)
    assert right.metrics["acc,none"].value == 1.0 and right.n_samples == {"original": 500, "effective": 9}
    # the first 9 test items are all "yes"; the subset keeps the labels' proportions (276/169/55 of 500)
    logged = [json.loads(line) for line in (out / "pubmedqa.jsonl").read_text().splitlines()]
    assert sorted(s["doc"]["final_decision"] for s in logged) == ["maybe"] + ["no"] * 3 + ["yes"] * 5
    assert right.details["subset"]["description"] == "subset of 9 of 500 items (seed 1234, stratified by final_decision)"
    always_maybe = score(ScriptedLM(lambda doc: "maybe"), tasks["pubmedqa"], manager, out, limit=9)
    assert always_maybe.metrics["acc,none"].value == pytest.approx(1 / 9)
    assert always_maybe.metrics["acc,none"].stderr is not None


def test_full_and_lora_runs_through_hf(axolotl_runs, prepared, shared_data):
    out, tasks, manager = prepared
    runs = {r.name: r for r in discover_runs(axolotl_runs).runs}
    labels = json.loads((shared_data / "pubmedqa" / "test_ground_truth.json").read_text()).values()
    picked = {"gsm8k": set(choose([None] * 1319, 2).indices), "pubmedqa": set(choose(list(labels), 2).indices)}
    logliks = {}
    for name in (VANILLA, "full", "lora"):
        lm = load_lm(runs[name], batch_size=2, dtype="float32", device="cpu")
        for task in tasks.values():
            samples = out / name / f"{task.name}.jsonl"
            result = evaluate_task(lm, name, task, manager, limit=2, max_new_tokens=8,
                                   samples_path=samples, settings={})
            assert result.n_samples["effective"] == 2
            assert result.details["num_fewshot"] == 1
            keys = {"gsm8k": {"exact_match,strict-match", "exact_match,flexible-extract"}, "pubmedqa": {"acc,none"}}
            assert keys[task.name] <= set(result.metrics)
            assert all(0.0 <= m.value <= 1.0 for m in result.metrics.values())
            lines = [json.loads(line) for line in samples.read_text().splitlines()]
            # one line per document and filter (GSM8K has two filters), for the seeded subset's items
            assert {s["doc_id"] for s in lines} == picked[task.name] and all("resps" in s and "doc" in s for s in lines)
            if task.name == "pubmedqa":
                logliks[name] = [r[0][0] for s in lines for r in s["resps"]]
    # the adapter was applied (through peft) and the full run's weights were used
    assert logliks["lora"] != pytest.approx(logliks[VANILLA])
    assert logliks["full"] != pytest.approx(logliks[VANILLA])


def test_missing_data_names_the_file(tmp_path):
    (tmp_path / "data" / "gsm8k").mkdir(parents=True)
    from eval_harness.lm_eval_runner import DataError

    with pytest.raises(DataError, match=r"gsm8k/train.jsonl: missing"):
        prepare_tasks(["gsm8k"], tmp_path / "out", tmp_path / "data", FEWSHOT)
    with pytest.raises(DataError, match=r"pubmedqa/ori_pqal.json: missing"):
        prepare_tasks(["pubmedqa"], tmp_path / "out", tmp_path / "data", FEWSHOT)


def test_unknown_task_suggests_names(prepared):
    out, _, manager = prepared
    tasks, _ = prepare_tasks(["gsm8kk"], out, None, {})
    (error,) = check_task_names(tasks, manager)
    assert "Unknown lm-eval task 'gsm8kk'" in error and "Did you mean" in error
