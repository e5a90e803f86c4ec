"""Stage 3: scores from the stored judgments, as FastChat's show_result.py computes them.

Records scored -1 (no rating in the verdict) are counted as parse failures and left out
of every mean; duplicate records (same question, turn, judge prompt and repeat) count once.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from lisa_formats.jsonl import read_jsonl

from eval_harness.mt_bench.data import Question
from eval_harness.mt_bench.judge import PARSE_FAILURE, judgment_key


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def load_judgments(judgment_file: Path, model_id: str, judge_model: str, question_ids: set[int],
                   endpoint: str | None | bool = False) -> list[dict]:
    """This model's judgments by this judge for these questions, first of each duplicate kept.

    ``endpoint``: only the judgments of that judge endpoint (``judge_endpoint``); False: any (older results).
    """
    seen: dict[tuple, dict] = {}
    for record in read_jsonl(judgment_file):
        if record.get("model") != model_id or record.get("judge", [None])[0] != judge_model:
            continue
        if endpoint is not False and record.get("judge_endpoint") != endpoint:
            continue
        if int(record["question_id"]) in question_ids:
            seen.setdefault(judgment_key(record), record)
    return list(seen.values())


def summarise(judgments: list[dict], questions: list[Question], repeats: int = 1) -> dict:
    """turn1/turn2/overall means, per category and per question, parse failures, judge spread."""
    category = {q.question_id: q.category for q in questions}
    valid = [j for j in judgments if j["score"] != PARSE_FAILURE]
    by_turn = {t: [j["score"] for j in valid if j["turn"] == t] for t in (1, 2)}
    turn1, turn2 = _mean(by_turn[1]), _mean(by_turn[2])
    per_category: dict[str, list[float]] = defaultdict(list)
    per_question: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for j in valid:
        per_category[category[int(j["question_id"])]].append(j["score"])
        per_question[int(j["question_id"])][j["turn"]].append(j["score"])
    summary = {
        "turn1": turn1,
        "turn2": turn2,
        "overall": None if turn1 is None or turn2 is None else (turn1 + turn2) / 2,
        "n_judgments": len(judgments),
        "parse_failures": len(judgments) - len(valid),
        "per_category": {c: _mean(per_category[c]) for c in sorted({q.category for q in questions})},
        "per_question": {
            str(q.question_id): {
                "category": q.category,
                "turn1": _mean(per_question[q.question_id][1]),
                "turn2": _mean(per_question[q.question_id][2]),
            }
            for q in questions
        },
        "judge_spread": None,
    }
    if repeats > 1:
        summary["judge_spread"] = spread(valid, repeats)
    return summary


def spread(valid: list[dict], repeats: int) -> dict:
    """How much repeated gradings of the same answer disagree, and the overall score per repeat."""
    scores: dict[tuple, list[float]] = defaultdict(list)
    for j in valid:
        scores[(int(j["question_id"]), j["turn"])].append(j["score"])
    stdevs = [statistics.pstdev(v) for v in scores.values() if len(v) > 1]
    per_repeat = []
    for r in range(repeats):
        turns = [_mean([j["score"] for j in valid if j.get("repeat", 0) == r and j["turn"] == t]) for t in (1, 2)]
        per_repeat.append(None if None in turns else (turns[0] + turns[1]) / 2)
    known = [x for x in per_repeat if x is not None]
    return {
        "repeats": repeats,
        "mean_item_stdev": _mean(stdevs),
        "max_item_stdev": max(stdevs) if stdevs else None,
        "overall_per_repeat": per_repeat,
        "overall_stdev": statistics.pstdev(known) if len(known) > 1 else None,
    }
