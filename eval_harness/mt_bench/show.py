"""Stage 3: scores from the stored judgments, as FastChat's show_result.py computes them.

Records scored -1 are left out of every mean: those with an ``error`` field (the judge never
answered) are counted as errors, the rest as parse failures. The overall score is FastChat's:
the mean of all valid turn ratings (``overall_turn_mean``, the mean of the two turn means, is
kept under that name). An item stored more than once (a FastChat file with several rounds, a
re-asked failure) counts once: the latest valid verdict, among the records with the newest
content key (``judge_key``) when there is one; a warning says how many items had several.
"""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict
from pathlib import Path

from lisa_formats.jsonl import read_jsonl

from eval_harness.mt_bench.data import Question
from eval_harness.mt_bench.judge import PARSE_FAILURE, judgment_key, latest_valid_of, newest_round

logger = logging.getLogger(__name__)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def load_judgments(judgment_file: Path, model_id: str, judge_model: str, question_ids: set[int],
                   endpoint: str | None | bool = False, keys: set | None = None) -> list[dict]:
    """This model's judgments by this judge for these questions, one per item (:func:`latest_valid`).

    ``endpoint``: only the judgments of that judge endpoint (``judge_endpoint``); False: any (older results).
    ``keys``: only records whose (``judge_key``, repeat) is in it (the current answers' judgments).
    """
    rounds: dict[tuple, list[dict]] = {}
    for record in read_jsonl(judgment_file):
        if record.get("model") != model_id or record.get("judge", [None])[0] != judge_model:
            continue
        if endpoint is not False and record.get("judge_endpoint") != endpoint:
            continue
        if keys is not None and (record.get("judge_key"), int(record.get("repeat", 0))) not in keys:
            continue
        if int(record["question_id"]) in question_ids:
            rounds.setdefault(judgment_key(record), []).append(record)
    return latest_valid(rounds, judgment_file)


def latest_valid(rounds: dict[tuple, list[dict]], source: Path) -> list[dict]:
    """One record per item from its records in file order: the latest valid one, else the latest.

    Records of an older content key (the answer or baseline changed since) are dropped first.
    """
    chosen, several = [], 0
    for records in rounds.values():
        records = newest_round(records)
        several += len(records) > 1
        chosen.append(latest_valid_of(records))
    if several:
        logger.warning("%s: %d item(s) have several judgments for the same answer; the latest valid verdict "
                       "of each is used", source, several)
    return chosen


def summarise(judgments: list[dict], questions: list[Question], repeats: int = 1) -> dict:
    """turn1/turn2/overall means, per category and per question, parse failures, errors, judge spread.

    ``overall`` is FastChat show_result's: the mean of every valid turn rating.
    """
    category = {q.question_id: q.category for q in questions}
    valid = [j for j in judgments if j["score"] != PARSE_FAILURE and "error" not in j]
    errors = sum(1 for j in judgments if "error" in j)
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
        "overall": None if turn1 is None or turn2 is None else _mean(by_turn[1] + by_turn[2]),
        "overall_turn_mean": None if turn1 is None or turn2 is None else (turn1 + turn2) / 2,
        "n_judgments": len(judgments),
        "parse_failures": len(judgments) - len(valid) - errors,
        "judge_errors": errors,
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
        turns = [[j["score"] for j in valid if j.get("repeat", 0) == r and j["turn"] == t] for t in (1, 2)]
        per_repeat.append(None if not (turns[0] and turns[1]) else _mean(turns[0] + turns[1]))
    known = [x for x in per_repeat if x is not None]
    return {
        "repeats": repeats,
        "mean_item_stdev": _mean(stdevs),
        "max_item_stdev": max(stdevs) if stdevs else None,
        "overall_per_repeat": per_repeat,
        "overall_stdev": statistics.pstdev(known) if len(known) > 1 else None,
    }


def repeat_scores(judgments: list[dict], question_ids: list[int], repeats: int):
    """(turn1, turn2): arrays of shape (questions, repeats) of valid ratings, NaN where none.

    What :func:`eval_harness.report.stats.bootstrap_mt_bench` resamples to put the judge's
    run-to-run spread into the interval (questions and repeats are both resampled).
    """
    import numpy as np

    row = {q: i for i, q in enumerate(question_ids)}
    out = np.full((2, len(question_ids), max(1, repeats)), np.nan)
    for j in judgments:
        qid, repeat = int(j["question_id"]), int(j.get("repeat", 0))
        if qid in row and repeat < out.shape[2] and j["score"] != PARSE_FAILURE and "error" not in j:
            out[int(j["turn"]) - 1, row[qid], repeat] = float(j["score"])
    return out[0], out[1]
