"""Optional pairwise grading against a baseline model (FastChat's ``pairwise-baseline`` mode).

Every turn is judged twice with the answers in both orders (``pair-v2`` / ``pair-math-v1``
prompts); a verdict that flips with the order counts as a tie, as in FastChat's
show_result.py. Records use FastChat's ``model_judgment/{judge}_pair.jsonl`` format, plus
``judge_key`` (the content address of both prompts: a changed answer or a retrained baseline
is judged anew) and, for a pair the judge never answered, ``error`` (both winners "error").
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from lisa_formats.jsonl import read_jsonl

from eval_harness.judges import Judge
from eval_harness.judges.openai_compat import redact_key
from eval_harness.mt_bench.data import MTBench, Question
from eval_harness.mt_bench.judge import (
    ERROR_JUDGMENT,
    Grading,
    content_key,
    done_keys,
    judge_endpoint,
    judge_prompt,
    latest_valid_of,
    newest_round,
    run_judge_tasks,
    served_model,
)

_VERDICT = re.compile(r"\[\[([ABC])\]\]")
ERROR = "error"  # FastChat's winner for a verdict without [[A]], [[B]] or [[C]]


def parse_verdict(judgment: str) -> str:
    """"A", "B", "tie" or "error". The last verdict wins: FastChat's check for "[[A]]" first
    would let an explanation that quotes the format ("[[A]] if A is better") decide."""
    found = _VERDICT.findall(judgment)
    if not found:
        return ERROR
    return {"A": "A", "B": "B", "C": "tie"}[found[-1]]


def pair_key(record: dict) -> tuple:
    return (
        int(record["question_id"]),
        record["model_1"],
        record["model_2"],
        tuple(record["judge"]),
        int(record["turn"]),
    )


@dataclass(frozen=True)
class PairTask:
    question: Question
    turn: int
    prompt_name: str
    system: str
    g1_user: str  # model as A, baseline as B
    g2_user: str  # baseline as A, model as B
    key: str  # content_key of (judge, system, g1_user, g2_user)


def judge_pairs(
    bench: MTBench,
    questions: list[Question],
    answers: dict[int, list[str]],
    baseline_answers: dict[int, list[str]],
    judgment_file: Path,
    *,
    model_id: str,
    baseline_id: str,
    grading: Grading,
) -> dict:
    """Judge each turn of ``model_id`` against ``baseline_id`` in both orders; skips stored pairs."""
    endpoint = judge_endpoint(grading.judge)
    done = done_keys(read_jsonl(judgment_file), grading.rejudge_failed)
    tasks = []
    for q in questions:
        if q.question_id not in baseline_answers:
            raise ValueError(f"baseline {baseline_id!r} has no answer to question {q.question_id}")
        mine, theirs = answers[q.question_id], baseline_answers[q.question_id]
        for turn in (1, 2):
            name, system, g1 = judge_prompt(bench, "pair", q, turn, {"_a": mine, "_b": theirs})
            _, _, g2 = judge_prompt(bench, "pair", q, turn, {"_a": theirs, "_b": mine})
            key = content_key(grading.judge, [model_id, baseline_id], system, g1, g2)
            if (key, 0) not in done:
                tasks.append(PairTask(q, turn, name, system, g1, g2, key))

    def grade(judge: Judge, task: PairTask, error: str | None = None) -> dict:
        if error is None:
            g1_judgment = redact_key(judge.complete(task.system, task.g1_user))
            g2_judgment = redact_key(judge.complete(task.system, task.g2_user))
        else:
            g1_judgment = g2_judgment = ERROR_JUDGMENT
        g1 = {"A": "model_1", "B": "model_2"}.get(parse_verdict(g1_judgment), parse_verdict(g1_judgment))
        g2 = {"A": "model_2", "B": "model_1"}.get(parse_verdict(g2_judgment), parse_verdict(g2_judgment))
        return {
            "question_id": task.question.question_id,
            "model_1": model_id,
            "model_2": baseline_id,
            "g1_winner": g1,
            "g2_winner": g2,
            "judge": [grading.judge.model, task.prompt_name],
            "judge_endpoint": endpoint,
            "judge_key": task.key,
            "judge_served_model": None if error is not None else served_model(judge),
            "g1_user_prompt": task.g1_user,
            "g1_judgment": g1_judgment,
            "g2_user_prompt": task.g2_user,
            "g2_judgment": g2_judgment,
            "turn": task.turn,
            "tstamp": time.time(),
            **({"error": error} if error is not None else {}),
        }

    return run_judge_tasks(tasks, grade, judgment_file, grading, f"MT-Bench pairwise ({model_id} vs {baseline_id})")


def summarise_pairs(judgment_file: Path, model_id: str, baseline_id: str, judge_model: str, question_ids: set[int],
                    endpoint: str | None | bool = False) -> dict:
    """Win/loss/tie of ``model_id`` against the baseline, FastChat's way: order-inconsistent = tie.

    ``endpoint``: only that judge endpoint's verdicts (False: any). ``missing``: turns without a verdict.
    An item stored more than once counts once: its latest valid record, among those with its newest
    ``judge_key``. ``judge_errors``: pairs the judge never answered (also in ``parse_failures``).
    """
    rounds: dict[tuple, list[dict]] = {}
    for r in read_jsonl(judgment_file):
        if endpoint is not False and r.get("judge_endpoint") != endpoint:
            continue
        if (r["model_1"], r["model_2"], r["judge"][0]) == (model_id, baseline_id, judge_model) and int(
            r["question_id"]
        ) in question_ids:
            rounds.setdefault(pair_key(r), []).append(r)
    records = {k: latest_valid_of(newest_round(v)) for k, v in rounds.items()}
    win = loss = tie = inconsistent = errors = 0
    for r in records.values():
        g1, g2 = r["g1_winner"], r["g2_winner"]
        if ERROR in (g1, g2):
            errors += 1
        elif g1 != g2:
            inconsistent += 1
            tie += 1
        elif g1 == "tie":
            tie += 1
        elif g1 == "model_1":
            win += 1
        else:
            loss += 1
    total = win + loss + tie
    return {
        "baseline": baseline_id,
        "win": win,
        "loss": loss,
        "tie": tie,
        "inconsistent": inconsistent,
        "parse_failures": errors,
        "judge_errors": sum(1 for r in records.values() if "error" in r),
        "win_rate": win / total if total else None,
        "loss_rate": loss / total if total else None,
        "win_rate_adjusted": (win + 0.5 * tie) / total if total else None,
        "missing": 2 * len(question_ids) - len(records),
        "judgment_file": str(judgment_file),
    }

