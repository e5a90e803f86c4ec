"""GSM8K, PubMedQA and any other lm-eval task, through ``lm_eval.simple_evaluate``.

GSM8K and PubMedQA use our own task YAMLs (``eval_harness/tasks/``): lm-eval 0.4.11's
stock ``pubmedqa`` needs a script-based dataset that datasets>=4 cannot load, and its
``gsm8k`` reads the hub. For each report we write small YAMLs into ``<output>/tasks/``
that ``include:`` ours and point them at the data actually used (local ``--data-dir``
files, or prepared JSONL), and load only that folder through ``TaskManager(include_path=...)``.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from eval_harness.results import Metric, TaskResult, atomic_write_jsonl

if TYPE_CHECKING:
    from lm_eval.api.model import LM

    from eval_harness.discovery import Run

TASK_DIR = Path(__file__).resolve().parent / "tasks"
PUBMEDQA_GROUND_TRUTH_URL = (
    "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data/test_ground_truth.json"
)

# The metrics the summary shows per task ("metric,filter" as lm-eval names them).
HEADLINE_METRICS = {
    "gsm8k": ("exact_match,strict-match", "exact_match,flexible-extract"),
    "pubmedqa": ("acc,none",),
}


@dataclass
class LmEvalTask:
    """A benchmark as the user names it, and the lm-eval task that computes it."""

    name: str  # "gsm8k", "pubmedqa", or a stock lm-eval task name
    lm_eval_name: str
    num_fewshot: int | None
    data: str  # where the items come from, for the cache key and the report


class DataError(Exception):
    """A benchmark file is missing or not in the expected shape; the message names it."""


# --------------------------------------------------------------------------- data


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise DataError(f"{path}: missing (expected the layout of the upstream repo; see --data-dir)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def _pubmedqa_record(pubid: str, item: dict[str, Any], source: Path | str) -> dict[str, Any]:
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


def prepare_pubmedqa(out_dir: Path, data_dir: Path | None) -> dict[str, str]:
    """Write ``test.jsonl`` (the official 500) and ``fewshot.jsonl`` (the other 500) into
    ``out_dir``; return lm-eval ``data_files``.

    Local: ``data_dir/pubmedqa/{ori_pqal,test_ground_truth}.json`` (+ ``pqal_splits.json``
    when present). Online: the hub's ``qiaojin/PubMedQA`` ``pqa_labeled`` and the official
    ground truth from the PubMedQA GitHub repo.
    """
    if data_dir is not None:
        src = Path(data_dir) / "pubmedqa"
        pool = _read_json(src / "ori_pqal.json")
        truth = _read_json(src / "test_ground_truth.json")
        records = {pid: _pubmedqa_record(pid, item, src / "ori_pqal.json") for pid, item in pool.items()}
        splits = src / "pqal_splits.json"
        fewshot_ids = _read_json(splits)["cv"] if splits.exists() else [p for p in records if p not in truth]
    else:
        from datasets import load_dataset

        hub = load_dataset("qiaojin/PubMedQA", "pqa_labeled", split="train")
        with urllib.request.urlopen(PUBMEDQA_GROUND_TRUTH_URL, timeout=60) as resp:
            truth = json.loads(resp.read())
        records = {
            str(row["pubid"]): {
                "pubid": str(row["pubid"]),
                "question": row["question"],
                "contexts": list(row["context"]["contexts"]),
                "labels": list(row["context"].get("labels") or []),
                "long_answer": row["long_answer"],
                "final_decision": row["final_decision"],
            }
            for row in hub
        }
        fewshot_ids = [p for p in records if p not in truth]
    missing = [p for p in truth if p not in records]
    if missing:
        raise DataError(f"PubMedQA: {len(missing)} test PMIDs (e.g. {missing[0]}) are not in the labelled set")
    for pid, label in truth.items():
        if records[pid]["final_decision"] != label:
            raise DataError(
                f"PubMedQA: PMID {pid} is {records[pid]['final_decision']!r} in the data, {label!r} in the ground truth"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(out_dir / "test.jsonl", (records[p] for p in truth))
    atomic_write_jsonl(out_dir / "fewshot.jsonl", (records[p] for p in fewshot_ids if p not in truth))
    return {"test": str(out_dir / "test.jsonl"), "fewshot": str(out_dir / "fewshot.jsonl")}


def gsm8k_data_files(data_dir: Path) -> dict[str, str]:
    files = {split: Path(data_dir) / "gsm8k" / f"{split}.jsonl" for split in ("train", "test")}
    for path in files.values():
        if not path.exists():
            raise DataError(f"{path}: missing (expected openai/grade-school-math's {path.name})")
    return {split: str(path.resolve()) for split, path in files.items()}


def prepare_tasks(
    names: list[str], out_dir: Path, data_dir: Path | None, fewshot: dict[str, int | None]
) -> tuple[list[LmEvalTask], Path]:
    """Generate the task YAMLs of this report into ``out_dir/tasks``; return the tasks and that dir."""
    task_dir = out_dir / "tasks"
    task_dir.mkdir(parents=True, exist_ok=True)
    tasks = []
    for name in names:
        if name == "gsm8k":
            override: dict[str, Any] = {"include": str(TASK_DIR / "gsm8k.yaml"), "task": "harness_gsm8k"}
            if data_dir is not None:
                files = gsm8k_data_files(data_dir)
                override.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": files})
                data = f"local:{Path(data_dir).resolve() / 'gsm8k'}"
            else:
                data = "hub:openai/gsm8k/main"
            tasks.append(LmEvalTask(name, "harness_gsm8k", fewshot.get(name), data))
        elif name == "pubmedqa":
            files = prepare_pubmedqa(out_dir / "data" / "pubmedqa", data_dir)
            override = {"include": str(TASK_DIR / "pubmedqa.yaml"), "task": "harness_pubmedqa",
                        "dataset_kwargs": {"data_files": files}}
            data = f"local:{Path(data_dir).resolve() / 'pubmedqa'}" if data_dir else "hub:qiaojin/PubMedQA/pqa_labeled"
            tasks.append(LmEvalTask(name, "harness_pubmedqa", fewshot.get(name), data))
        else:
            tasks.append(LmEvalTask(name, name, fewshot.get(name), "lm-eval default"))
            continue
        (task_dir / f"{name}.yaml").write_text(
            "# Generated by eval_harness for this report; edits are overwritten on the next run.\n"
            + yaml.safe_dump(override, sort_keys=False)
        )
    return tasks, task_dir


def task_manager(task_dir: Path):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(task_dir))


def check_task_names(tasks: list[LmEvalTask], manager) -> list[str]:
    """Error messages for names lm-eval does not know, with close matches."""
    import difflib

    known = set(manager.all_tasks)
    errors = []
    for task in tasks:
        if task.lm_eval_name not in known:
            close = difflib.get_close_matches(task.lm_eval_name, sorted(known), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            errors.append(f"Unknown lm-eval task {task.name!r}.{hint} (see `lm-eval ls tasks`)")
    return errors


# --------------------------------------------------------------------------- models


def tokenizer_source(run: "Run") -> str:
    """Axolotl saves the tokenizer it trained with into the run dir: prefer it."""
    if run.path and (Path(run.path) / "tokenizer_config.json").exists():
        return run.path
    return run.model_path


def load_lm(run: "Run", *, batch_size: int | str, dtype: str, device: str, max_length: int | None = None) -> "LM":
    """An lm-eval ``hf`` model for the run: full weights, or base + adapter through peft."""
    from lm_eval.models.huggingface import HFLM

    kwargs: dict[str, Any] = dict(
        pretrained=run.model_path, tokenizer=tokenizer_source(run), dtype=dtype, device=device, batch_size=batch_size
    )
    if run.adapter_path:
        kwargs["peft"] = run.adapter_path
    if max_length:
        kwargs["max_length"] = max_length
    return HFLM(**kwargs)


# --------------------------------------------------------------------------- evaluation


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # lm-eval writes "N/A" for stderrs it cannot compute


def evaluate_task(
    lm: "LM",
    run_name: str,
    task: LmEvalTask,
    manager,
    *,
    limit: int | None,
    max_new_tokens: int,
    samples_path: Path,
    settings: dict[str, Any],
) -> TaskResult:
    """Score one run on one task; the per-sample log is written to ``samples_path``."""
    from lm_eval import simple_evaluate

    start = time.time()
    out = simple_evaluate(
        model=lm,
        tasks=[task.lm_eval_name],
        num_fewshot=task.num_fewshot,
        limit=limit,
        task_manager=manager,
        log_samples=True,
        gen_kwargs={"max_gen_toks": max_new_tokens},
        bootstrap_iters=1000,
    )
    if out is None:  # non-zero ranks under accelerate return None
        raise RuntimeError(f"lm-eval returned no results for {task.lm_eval_name}")
    scores = out["results"][task.lm_eval_name]
    metrics: dict[str, Metric] = {}
    for key, value in scores.items():
        if key == "alias" or "_stderr," in key or _number(value) is None:
            continue
        metric, _, flt = key.partition(",")
        metrics[key] = Metric(value=float(value), stderr=_number(scores.get(f"{metric}_stderr,{flt}")))
    counts = out.get("n-samples", {}).get(task.lm_eval_name, {})
    atomic_write_jsonl(samples_path, out.get("samples", {}).get(task.lm_eval_name, []))
    return TaskResult(
        run=run_name,
        task=task.name,
        metrics=metrics,
        n_samples={"original": counts.get("original"), "effective": counts.get("effective")},
        settings=settings,
        seconds=round(time.time() - start, 2),
        files={"samples": str(samples_path)},
        details={
            "lm_eval_task": task.lm_eval_name,
            "num_fewshot": out.get("n-shot", {}).get(task.lm_eval_name, task.num_fewshot),
            "lm_eval_version": _lm_eval_version(),
        },
    )


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")
