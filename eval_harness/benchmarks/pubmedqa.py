"""PubMedQA (Jin et al., 2019, https://arxiv.org/abs/1909.06146), PQA-L: yes/no/maybe from an abstract.

By default scored by lm-eval's stock ``pubmedqa`` task itself (its YAML is included unchanged:
0-shot, the sections of the abstract joined, accuracy). Stock reads the hub's
``bigbio/pubmed_qa`` ``pubmed_qa_labeled_fold0_source``, which the ``datasets`` 4 this project
uses cannot load (lm-eval issue #3645), so :func:`prepare` writes the same documents from the
upstream files: the official 500 test PMIDs (``test``), fold 0's 450 training and 50 development
PMIDs (``train``, the exemplar pool, and ``validation``), in that dataset's schema and order. The
folds are those of the upstream ``preprocess/split_dataset.py``: read from ``pqal_splits.json``
when present, otherwise recomputed (:func:`pqal_folds`); online, the two upstream files are
downloaded at a pinned commit, so every mode yields byte-identical documents. The variant
``labelled`` (``eval_harness/tasks/pubmedqa_labelled.yaml``) is ``--variant pubmedqa=labelled``.
The demo data are made-up studies in PubMedQA's format.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

from lisa_formats.atomic import write_json_atomic, write_jsonl_atomic

from eval_harness.benchmarks.registry import (DEMO_TEST_SEED, DEMO_TRAIN_SEED, STOCK, Benchmark, DataError,
                                              Headline, Prepared, Variant, register_benchmark)
from eval_harness.pinned import cache_root, download
from eval_harness.tasks import TASK_DIR, stock_task_yaml

PUBMEDQA_COMMIT = "1cbae8e92f72f20c8d3747cbb3bf5bc53554d997"
PUBMEDQA_RAW = f"https://raw.githubusercontent.com/pubmedqa/pubmedqa/{PUBMEDQA_COMMIT}/data"
# upstream file -> first 16 hex digits of its sha256 at PUBMEDQA_COMMIT
UPSTREAM_FILES = {"ori_pqal.json": "8b3276be8942ebbd", "test_ground_truth.json": "939fe566f09017d1"}
# bigbio's pubmed_qa source schema, in its order: the fields of every document the task reads
FIELDS = ("QUESTION", "CONTEXTS", "LABELS", "MESHES", "YEAR", "reasoning_required_pred", "reasoning_free_pred",
          "final_decision", "LONG_ANSWER")
ANSWERS = ("yes", "no", "maybe")
SPLIT_SEED = 0  # split_dataset.py's random.seed(0)

LABELLED = Variant("labelled", "each abstract section on its own line with its label (\"Methods: ...\") instead "
                   "of stock's plain join, and 5-shot (stock: 0-shot) from the same fold-0 training PMIDs, so a base "
                   "model sees the answer format first: what this harness scored before", fewshot=5)


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise DataError(f"{path}: missing (expected the layout of the upstream repo; see --data-dir)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def _document(pubid: str, item: dict[str, Any], source: Path) -> dict[str, Any]:
    """One ori_pqal.json record as bigbio's source schema has it."""
    missing = [key for key in ("QUESTION", "CONTEXTS", "final_decision") if key not in item]
    if missing or item["final_decision"] not in ANSWERS:
        raise DataError(f"{source}: record {pubid} lacks {', '.join(missing)} or has final_decision "
                        f"{item.get('final_decision')!r} (expected QUESTION, CONTEXTS and one of {', '.join(ANSWERS)})")
    return {key: item.get(key, [] if key in ("LABELS", "MESHES") else None) for key in FIELDS}


def _stratified(pmids: list[str], labels: dict[str, str], parts: int, rng: random.Random) -> list[list[str]]:
    """split_dataset.py's split(): per label, shuffle and cut into ``parts`` chunks of ceil(n/parts);
    part i is the i-th chunk of yes, then no, then maybe; a short last part takes one from each other."""
    chunks = {}
    for answer in ANSWERS:
        same = [p for p in pmids if labels[p] == answer]
        rng.shuffle(same)
        size = math.ceil(len(same) / parts)
        chunks[answer] = [same[i * size:(i + 1) * size] if i < parts - 1 else same[i * size:] for i in range(parts)]
    out = [[p for answer in ANSWERS for p in chunks[answer][i]] for i in range(parts)]
    if len(out[-1]) != len(out[0]):
        for part in out[:-1]:
            moved = rng.choice(part)
            part.remove(moved)
            out[-1].append(moved)
    return out


def pqal_folds(pool: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """(test PMIDs, the 10 cross-validation folds) as upstream's ``split_dataset.py pqal`` makes them."""
    rng = random.Random(SPLIT_SEED)
    labels = {pid: item["final_decision"] for pid, item in pool.items()}
    cv, test = _stratified(list(pool), labels, 2, rng)
    return test, _stratified(cv, labels, 10, rng)


def _sources(data_dir: Path | None) -> Path:
    if data_dir is not None:
        return Path(data_dir) / "pubmedqa"
    target = cache_root() / "pubmedqa" / PUBMEDQA_COMMIT[:12]
    for name, sha16 in UPSTREAM_FILES.items():
        download(f"{PUBMEDQA_RAW}/{name}", target / name, sha16,
                 instead="pass --data-dir DIR with DIR/pubmedqa/{ori_pqal,test_ground_truth}.json")
    return target


def fold0(src: Path) -> dict[str, list[str]]:
    """The PMIDs of fold 0's train, validation (dev) and of the test split, in the dataset's order."""
    pool = _read_json(src / "ori_pqal.json")
    truth = _read_json(src / "test_ground_truth.json")
    splits = src / "pqal_splits.json"
    if splits.exists():
        folds = _read_json(splits).get("cv_folds")
        if not (isinstance(folds, list) and len(folds) == 10):
            raise DataError(f"{splits}: expected 'cv_folds', a list of 10 lists of PMIDs")
    else:
        labels = {pid: item.get("final_decision") for pid, item in pool.items()}
        if any(label not in ANSWERS for label in labels.values()):
            raise DataError(f"{src / 'ori_pqal.json'}: every final_decision must be one of {', '.join(ANSWERS)}")
        test, folds = pqal_folds(pool)
        if set(test) != set(truth):
            raise DataError(f"{src}: recomputing upstream's split does not give test_ground_truth.json's PMIDs "
                            "(not the upstream ori_pqal.json?); add pqal_splits.json with the 10 'cv_folds'")
    return {"train": [p for fold in folds[1:] for p in fold], "validation": list(folds[0]), "test": list(truth)}


def write_splits(out_dir: Path, data_dir: Path | None) -> dict[str, str]:
    """Write ``{train,validation,test}.jsonl`` (fold 0 and the official test split) into ``out_dir``;
    return lm-eval ``data_files``."""
    src = _sources(data_dir)
    pool = _read_json(src / "ori_pqal.json")
    truth = _read_json(src / "test_ground_truth.json")
    splits = fold0(src)
    for split, pmids in splits.items():
        missing = [p for p in pmids if p not in pool]
        if missing:
            raise DataError(f"PubMedQA {split}: {len(missing)} PMIDs (e.g. {missing[0]}) are not in {src / 'ori_pqal.json'}")
    for pid, label in truth.items():
        if pool[pid].get("final_decision") != label:
            raise DataError(f"PubMedQA: PMID {pid} is {pool[pid].get('final_decision')!r} in ori_pqal.json, "
                            f"{label!r} in test_ground_truth.json")
    return {split: str(write_jsonl_atomic(out_dir / f"{split}.jsonl", [_document(p, pool[p], src / "ori_pqal.json")
                                                                      for p in pmids]))
            for split, pmids in splits.items()}


def prepare(work_dir: Path, data_dir: Path | None, variant: str = STOCK) -> Prepared:
    files = write_splits(Path(work_dir) / "data" / "pubmedqa", data_dir)
    task_file = stock_task_yaml("pubmedqa/pubmedqa.yaml") if variant == STOCK else TASK_DIR / f"pubmedqa_{variant}.yaml"
    overrides = {"include": str(task_file), "task": "harness_pubmedqa", "dataset_path": "json", "dataset_name": None,
                 "dataset_kwargs": {"data_files": files}}
    data = f"local:{Path(data_dir).resolve() / 'pubmedqa'}" if data_dir else f"github:pubmedqa/pubmedqa@{PUBMEDQA_COMMIT[:12]}"
    return Prepared(overrides, data, tuple(Path(f) for f in files.values()))


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
    fewshot=0,
    prepare=prepare,
    demo_data=write_demo_data,
    description="biomedical yes/no/maybe questions on the official 500 test abstracts",
    variants=(LABELLED,),
    stratify_by="final_decision",
))
