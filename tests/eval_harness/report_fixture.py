"""A results dir as ``compare`` leaves it, written from known numbers (no model, no judge).

Runs: Vanilla, full, lisa, lora and a LoRA run whose name is an HTML payload. MT-Bench scores
are chosen so that LISA beats LoRA by 2 points on every question (a real gap) and differs from
Full on one turn only (no real gap); LoRA has one unparsable verdict whose answer and judge
text are HTML payloads too. Vanilla answers "yes" to every PubMedQA item (a constant answer).
Peak memory is what the trainer logged (``memory="trainer"``), or zeros in the trainer's log and
the training process's peak RSS in ``run_resources.json`` (``"rss"``), or both kinds (``"mixed"``:
full's from the trainer, the others' RSS).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lisa_formats.atomic import write_json_atomic as atomic_write_json
from lisa_formats.atomic import write_jsonl_atomic as atomic_write_jsonl
from lisa_formats.history import LisaHistory
from lisa_formats.jsonl import read_jsonl
from lisa_formats.norms import LayerNorm, NormsProfile, RunNorms
from lisa_formats.resources import write_resources

from eval_harness.discovery import Run, TrainingFacts
from eval_harness.results import Metric, ResultStore, TaskResult

JUDGE = "gpt-4"
PAYLOAD = "<script>window.__xss='script'</script><img src=x onerror=\"document.title='pwned';window.__xss='img'\">"
EVIL_RUN = "evil<img src=x onerror=window.__xss=1>"
PER_CATEGORY = 2  # questions per MT-Bench category: 16 questions in all
GSM8K_N, PUBMEDQA_N = 40, 50
TRAINABLE = {"full": 1_000_000, "lisa": 300_000, "lora": 20_000, EVIL_RUN: 20_000}
MEMORY = {"full": 12.0, "lisa": 6.5, "lora": 5.0, EVIL_RUN: 5.5}
RSS_BYTES = {"full": 9 * 2**30, "lisa": 5 * 2**30, "lora": 4 * 2**30, EVIL_RUN: 4 * 2**30 + 2**29}
PUBMEDQA_CHOICES = ("yes", "no", "maybe")
METHODS = {"Vanilla": "Vanilla", "full": "Full", "lisa": "LISA", "lora": "LoRA", EVIL_RUN: "LoRA"}
SETTINGS = {"lisa": {"gamma": 2, "K": 5, "learning_rate": 1e-4}, "lora": {"r": 8, "alpha": 16, "note": PAYLOAD},
            EVIL_RUN: {"r": 4}}


def pick_questions(shared_data: Path) -> list[dict]:
    chosen, per = [], {}
    for q in read_jsonl(shared_data / "mt_bench" / "question.jsonl"):
        if per.get(q["category"], 0) < PER_CATEGORY:
            per[q["category"]] = per.get(q["category"], 0) + 1
            chosen.append(q)
    return chosen


def mt_scores(n: int) -> dict[str, np.ndarray]:
    """run -> (n, 2) turn scores; NaN marks LoRA's unparsable verdict."""
    rng = np.random.default_rng(7)
    lora = rng.integers(2, 8, size=(n, 2)).astype(float)
    lisa = lora + 2
    full = lisa.copy()
    full[0, 0] -= 1
    vanilla = np.clip(lora - 1, 1, 10)
    lora[3, 1] = np.nan
    return {"Vanilla": vanilla, "full": full, "lisa": lisa, "lora": lora}


def correct(run: str, n: int, filt: str = "") -> np.ndarray:
    """Deterministic right/wrong per item, with accuracy rising Vanilla < lora < lisa < full."""
    share = {"Vanilla": 0.2, "lora": 0.4, "lisa": 0.55, "full": 0.6, EVIL_RUN: 0.3}[run] + (0.05 if filt == "flex" else 0)
    return (np.arange(n) < round(share * n)).astype(float)


def _mt_bench_result(run: str, scores: np.ndarray, questions: list[dict], out: Path, mt_dir: Path) -> TaskResult:
    turn1, turn2 = np.nanmean(scores[:, 0]), np.nanmean(scores[:, 1])
    judgments, answers = [], []
    for i, q in enumerate(questions):
        turns = [f"{run} answer {q['question_id']}.{t}" for t in (1, 2)]
        for t in (1, 2):
            score = scores[i, t - 1]
            text = f"Fine. Rating: [[{score:g}]]" if not np.isnan(score) else f"No rating here {PAYLOAD}"
            if np.isnan(score):
                turns[t - 1] = f"My answer: {PAYLOAD}"
            judgments.append({"question_id": q["question_id"], "model": run, "judge": [JUDGE, "single-v1"],
                              "user_prompt": "...", "judgment": text, "score": -1 if np.isnan(score) else float(score),
                              "turn": t, "repeat": 0, "tstamp": 0.0})
        answers.append({"question_id": q["question_id"], "answer_id": f"{run}-{i}", "model_id": run,
                        "choices": [{"index": 0, "turns": turns}], "tstamp": 0.0})
    judgment_file = out / "mt_bench" / "model_judgment" / f"{JUDGE}_single.jsonl"
    judgment_file.parent.mkdir(parents=True, exist_ok=True)
    with judgment_file.open("a") as fh:
        fh.writelines(json.dumps(j) + "\n" for j in judgments)
    answer_file = out / "mt_bench" / "model_answer" / f"{run}.jsonl"
    atomic_write_jsonl(answer_file, answers)
    details = {
        "judged": True, "judge_model": JUDGE, "n_questions": len(questions),
        "parse_failures": int(np.isnan(scores).sum()),
        "judge_spread": {"repeats": 2, "overall_stdev": {"Vanilla": 0.3, "full": 0.2, "lisa": 0.1, "lora": 0.25}[run]},
        "per_question": {str(q["question_id"]): {"category": q["category"]} for q in questions},
    }
    return TaskResult(run=run, task="mt_bench",
                      metrics={"turn1": Metric(float(turn1)), "turn2": Metric(float(turn2)),
                               "overall": Metric(float((turn1 + turn2) / 2))},
                      n_samples={"original": None, "effective": len(questions)},
                      settings={"mt_bench_dir": str(mt_dir)}, seconds=1.0,
                      files={"answers_file": str(answer_file), "judgment_file": str(judgment_file)}, details=details)


def _lm_eval_result(run: str, task: str, out: Path) -> TaskResult:
    store = ResultStore(out)
    n = GSM8K_N if task == "gsm8k" else PUBMEDQA_N
    filters = {"strict-match": "", "flexible-extract": "flex"} if task == "gsm8k" else {"none": ""}
    metric = "exact_match" if task == "gsm8k" else "acc"
    samples, metrics = [], {}
    for flt, tag in filters.items():
        right = correct(run, n, tag)
        samples += [{"doc_id": i, "filter": flt, "metrics": [metric], metric: float(v), **_answer(run, task, i)}
                    for i, v in enumerate(right)]
        metrics[f"{metric},{flt}"] = Metric(float(right.mean()), float(right.std(ddof=1) / np.sqrt(n)))
    atomic_write_jsonl(store.samples_path(run, task), samples)
    return TaskResult(run=run, task=task, metrics=metrics, n_samples={"original": n, "effective": n},
                      settings={}, seconds=2.0, files={"samples": str(store.samples_path(run, task))},
                      details={"num_fewshot": 5, "lm_eval_version": "0.4.11"})


def _answer(run: str, task: str, item: int) -> dict:
    """What lm-eval logs as the model's answer: a generated number, or one log-likelihood per choice."""
    if task == "gsm8k":
        return {"filtered_resps": [str(item * 7 % 11)]}
    chosen = 0 if run == "Vanilla" else item % len(PUBMEDQA_CHOICES)
    return {"arguments": [["Question: ...\nAnswer:", f" {c}"] for c in PUBMEDQA_CHOICES],
            "filtered_resps": [[-1.0 if i == chosen else -5.0 - i, False] for i in range(len(PUBMEDQA_CHOICES))]}


def _train_logs(run_dir: Path, run: str, memory: str) -> None:
    start = {"full": 2.0, "lisa": 2.2, "lora": 2.5, EVIL_RUN: 2.6}[run]
    logged = MEMORY[run] if memory == "trainer" or (memory == "mixed" and run == "full") else 0.0  # CPU logs zeros
    history = [{"step": s, "epoch": s / 20, "loss": start * 0.9 ** s, "memory/max_allocated (GiB)": logged}
               for s in range(1, 21)]
    history.append({"step": 20, "train_runtime": 100.0 + TRAINABLE[run] / 10_000, "train_samples_per_second": 3.2,
                    "train_loss": start * 0.6})
    atomic_write_json(run_dir / "trainer_state.json", {"log_history": history})
    if memory != "trainer":
        write_resources(run_dir, peak_rss_bytes=RSS_BYTES[run], peak_gpu_bytes=None, wall_s=130.0,
                        command=["axolotl", "train", "config.yml"], exit_code=0)


def write_results(root: Path, shared_data: Path, *, memory: str = "trainer", settings: dict | None = None) -> dict:
    """runs/ with run dirs and runs/report/ as compare writes it; returns the numbers put in.

    ``settings`` are added to the compare settings recorded in results.json (e.g. ``{"origin": "demo"}``)."""
    runs_dir, out = root / "runs", root / "runs" / "report"
    questions = pick_questions(shared_data)
    scores = mt_scores(len(questions))
    store = ResultStore(out)
    records, stored = [], {}
    for name, method in METHODS.items():
        path = None if name == "Vanilla" else runs_dir / name
        training = TrainingFacts(trainable_params=TRAINABLE.get(name))
        if path is not None:
            path.mkdir(parents=True)
            _train_logs(path, name, memory)
        results = {}
        if name in scores:
            results["mt_bench"] = _mt_bench_result(name, scores[name], questions, out, shared_data / "mt_bench")
            results["gsm8k"] = _lm_eval_result(name, "gsm8k", out)
        results["pubmedqa"] = _lm_eval_result(name, "pubmedqa", out)
        for result in results.values():
            store.save(result)
        stored[name] = results
        run = Run(name=name, method=method, model_path=str(path or "base"), adapter_path=None, base_model="base",
                  path=str(path) if path else None, settings=SETTINGS.get(name, {}), training=training)
        records.append({**run.to_json(), "results": {t: r.to_json() for t, r in results.items()},
                        "task_errors": {}, "cached": []})
    LisaHistory(settings={"n_layers": 2, "interval_steps": 5}, num_layers=6, layers_path="model.layers",
                layer_params=[100] * 6, always_trainable_params=50,
                switches=[{"step": 5 * i, "active": [i % 6, (2 * i + 1) % 6], "trainable_params": 250,
                           "optimizer_state_bytes_before": 0, "optimizer_state_bytes": 0} for i in range(4)]).write(runs_dir / "lisa")
    layers = lambda scale: [LayerNorm(str(k), "layer" if isinstance(k, int) else k, scale, scale / 10, scale / 3, 10.0, 3)  # noqa: E731
                            for k in ["embedding", *range(6), "head"]]
    profile = NormsProfile(base="base", runs=[RunNorms("lisa", str(runs_dir / "lisa"), "weights", layers(0.5)),
                                              RunNorms("lora", str(runs_dir / "lora"), "lora", layers(0.2))])
    atomic_write_json(runs_dir / "norms.json", profile.to_json())
    atomic_write_json(out / "results.json", {
        "schema_version": 1, "generated_by": "python -m eval_harness compare", "updated": "2025-01-01T00:00:00+00:00",
        "complete": True, "settings": {"judge_repeats": 2, "limit": None, **(settings or {})}, "base_model": "base",
        "tasks": ["mt_bench", "gsm8k", "pubmedqa"], "problems": [], "runs": records,
    })
    return {"runs_dir": runs_dir, "out": out, "questions": questions, "scores": scores, "results": stored}

