"""PubMedQA (Jin et al., 2019, https://arxiv.org/abs/1909.06146), PQA-L: yes/no/maybe from an abstract.

Scored by our task YAML ``eval_harness/tasks/pubmedqa.yaml`` on the official 500 test PMIDs,
exemplars from the other 500 labelled ones. :func:`prepare` converts the upstream files (local
``--data-dir``: ``DIR/pubmedqa/{ori_pqal,test_ground_truth}.json`` and ``pqal_splits.json`` when
present; online: the hub's ``qiaojin/PubMedQA`` ``pqa_labeled`` and the official ground truth)
into the two JSONL splits the YAML reads. The demo data are made-up studies in PubMedQA's format.
"""

from __future__ import annotations

import json
import random
import urllib.request
from pathlib import Path
from typing import Any

from lisa_formats.atomic import write_json_atomic, write_jsonl_atomic

from eval_harness.benchmarks.registry import (DEMO_TEST_SEED, DEMO_TRAIN_SEED, Benchmark, DataError, Headline,
                                              Prepared, register_benchmark)
from eval_harness.tasks import TASK_DIR

GROUND_TRUTH_URL = "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data/test_ground_truth.json"


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise DataError(f"{path}: missing (expected the layout of the upstream repo; see --data-dir)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def _record(pubid: str, item: dict[str, Any], source: Path | str) -> dict[str, Any]:
    try:
        return {
            "pubid": str(pubid),
            "question": item["QUESTION"],
            "contexts": list(item["CONTEXTS"]),
            "labels": list(item.get("LABELS") or []),
            "long_answer": item.get("LONG_ANSWER", ""),
            "final_decision": item["final_decision"],
        }
    except (KeyError, TypeError) as exc:
        raise DataError(f"{source}: record {pubid} lacks {exc} (expected QUESTION, CONTEXTS, final_decision)") from None


def _local(data_dir: Path) -> tuple[dict[str, dict], dict[str, str], list[str]]:
    src = Path(data_dir) / "pubmedqa"
    pool = _read_json(src / "ori_pqal.json")
    truth = _read_json(src / "test_ground_truth.json")
    records = {pid: _record(pid, item, src / "ori_pqal.json") for pid, item in pool.items()}
    splits = src / "pqal_splits.json"
    fewshot_ids = _read_json(splits)["cv"] if splits.exists() else [p for p in records if p not in truth]
    return records, truth, fewshot_ids


def _online() -> tuple[dict[str, dict], dict[str, str], list[str]]:
    from datasets import load_dataset

    hub = load_dataset("qiaojin/PubMedQA", "pqa_labeled", split="train")
    with urllib.request.urlopen(GROUND_TRUTH_URL, timeout=60) as resp:
        truth = json.loads(resp.read())
    records = {
        str(row["pubid"]): {
            "pubid": str(row["pubid"]), "question": row["question"], "contexts": list(row["context"]["contexts"]),
            "labels": list(row["context"].get("labels") or []), "long_answer": row["long_answer"],
            "final_decision": row["final_decision"],
        }
        for row in hub
    }
    return records, truth, [p for p in records if p not in truth]


def write_splits(out_dir: Path, data_dir: Path | None) -> dict[str, str]:
    """Write ``test.jsonl`` (the official 500) and ``fewshot.jsonl`` (the other 500) into ``out_dir``;
    return lm-eval ``data_files``."""
    records, truth, fewshot_ids = _local(data_dir) if data_dir is not None else _online()
    missing = [p for p in truth if p not in records]
    if missing:
        raise DataError(f"PubMedQA: {len(missing)} test PMIDs (e.g. {missing[0]}) are not in the labelled set")
    for pid, label in truth.items():
        if records[pid]["final_decision"] != label:
            raise DataError(
                f"PubMedQA: PMID {pid} is {records[pid]['final_decision']!r} in the data, {label!r} in the ground truth"
            )
    write_jsonl_atomic(out_dir / "test.jsonl", (records[p] for p in truth))
    write_jsonl_atomic(out_dir / "fewshot.jsonl", (records[p] for p in fewshot_ids if p not in truth))
    return {"test": str(out_dir / "test.jsonl"), "fewshot": str(out_dir / "fewshot.jsonl")}


def prepare(work_dir: Path, data_dir: Path | None) -> Prepared:
    files = write_splits(Path(work_dir) / "data" / "pubmedqa", data_dir)
    overrides = {"include": str(TASK_DIR / "pubmedqa.yaml"), "task": "harness_pubmedqa",
                 "dataset_kwargs": {"data_files": files}}
    data = f"local:{Path(data_dir).resolve() / 'pubmedqa'}" if data_dir else "hub:qiaojin/PubMedQA/pqa_labeled"
    return Prepared(overrides, data)


# --------------------------------------------------------------------------- demo data

TREATMENTS = ["daily walking", "a low-salt diet", "vitamin D tablets", "an extra hour of sleep", "group exercise",
              "a breathing programme", "cold water swimming", "a reading lamp at night", "green tea", "stretching"]
OUTCOMES = ["blood pressure", "fatigue", "recovery time", "joint pain", "sleep quality", "headache frequency",
            "resting heart rate", "reported stress"]
GROUPS = ["older adults", "nurses on night shifts", "office workers", "students", "patients after knee surgery",
          "runners", "new parents", "farm workers"]
FINDINGS = {
    "yes": ("{outcome} improved in {share}% of the {treated} treated participants and in {control_share}% of the "
            "{control} controls; the difference was significant.",
            "{treatment} improves {outcome} in {group}."),
    "no": ("{outcome} changed in the same way in both groups ({share}% and {control_share}%); no difference "
           "was found.",
           "{treatment} does not change {outcome} in {group}."),
    "maybe": ("{outcome} improved slightly more with treatment ({share}% vs {control_share}%), but the sample "
              "was small and the difference was not significant.",
              "{treatment} may help {outcome} in {group}, but larger studies are needed."),
}


def _study(rng: random.Random, label: str) -> dict:
    treatment, outcome, group = rng.choice(TREATMENTS), rng.choice(OUTCOMES), rng.choice(GROUPS)
    treated, control = rng.randint(20, 200), rng.randint(20, 200)
    share = rng.randint(40, 80)
    control_share = {"yes": share - rng.randint(15, 30), "no": share + rng.randint(-2, 2),
                     "maybe": share - rng.randint(3, 8)}[label]
    fields = dict(treatment=treatment, outcome=outcome, group=group, treated=treated, control=control,
                  share=share, control_share=control_share)
    result, conclusion = FINDINGS[label]
    return {
        "QUESTION": f"Does {treatment} change {outcome} in {group}?",
        "CONTEXTS": [
            f"{outcome.capitalize()} is a common concern among {group}, and {treatment} is often suggested.",
            f"We assigned {treated} {group} to {treatment} and {control} to usual care for twelve weeks.",
            result.format(**fields).capitalize(),
        ],
        "LABELS": ["BACKGROUND", "METHODS", "RESULTS"],
        "MESHES": [outcome.title(), group.title()],
        "YEAR": str(rng.randint(2001, 2024)),
        "reasoning_required_pred": label,
        "reasoning_free_pred": label,
        "final_decision": label,
        "LONG_ANSWER": conclusion.format(**fields).capitalize(),
    }


def studies(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    # yes/no/maybe in roughly the real set's proportions (about 55/34/11)
    return [_study(rng, rng.choices(("yes", "no", "maybe"), weights=(55, 34, 11))[0]) for _ in range(n)]


def study_text(study: dict) -> str:
    return f"{study['QUESTION']} {' '.join(study['CONTEXTS'])} {study['LONG_ANSWER']}"


def write_demo_data(data_dir: Path, test_items: int) -> None:
    """``pubmedqa/{ori_pqal,test_ground_truth,pqal_splits}.json`` with ``test_items`` test and as many cv studies."""
    folder = Path(data_dir) / "pubmedqa"
    pool = studies(test_items, DEMO_TEST_SEED) + studies(test_items, DEMO_TRAIN_SEED)
    # ids look like PMIDs but start at 90,000,000, far above any real one of this era
    ids = [str(90_000_000 + i) for i in range(len(pool))]
    test_ids, cv_ids = ids[:test_items], ids[test_items:]
    write_json_atomic(folder / "ori_pqal.json", dict(zip(ids, pool)))
    write_json_atomic(folder / "test_ground_truth.json", {i: pool[n]["final_decision"] for n, i in enumerate(test_ids)})
    write_json_atomic(folder / "pqal_splits.json",
                      {"_description": "eval_harness demo split: generated studies, not PubMedQA's",
                       "source": __name__, "test": test_ids, "cv": cv_ids, "cv_folds": [cv_ids[k::10] for k in range(10)]})


PUBMEDQA = register_benchmark(Benchmark(
    name="pubmedqa",
    lm_eval_task="harness_pubmedqa",
    headlines=(Headline("PubMedQA acc %", "acc,none"),),
    fewshot=5,
    prepare=prepare,
    demo_data=write_demo_data,
    description="biomedical yes/no/maybe questions on the official 500 test abstracts",
))
