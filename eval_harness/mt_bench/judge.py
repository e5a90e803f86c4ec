"""Stage 2: single-answer grading by an LLM judge, as FastChat's llm_judge defines it.

The judge is any :class:`~eval_harness.judges.Judge` (by default the OpenAI-compatible one,
built from :class:`~eval_harness.judges.JudgeSettings`). Differences from FastChat's
gen_judgment.py: scores outside 1-10 and bare citations such as "[1]" are not taken as
ratings; every judgment is appended as it arrives, so an interrupted run resumes without
judging anything twice. An item that still fails after the judge's retries is stored as an
error (FastChat's ``$ERROR$`` with score -1, plus an ``error`` field): counted, never averaged,
re-asked only with ``rejudge_failed``. A request the judge refuses (HTTP 400) is not stored
and is asked again by the next run. Caches are content-addressed: each record carries
``judge_key``, a hash of the judge model, endpoint and settings and of the full prompts (so of
the answer, reference and baseline texts); only a record with the current key counts as done.
Verdict texts are stored with the API key redacted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lisa_formats.jsonl import JsonlAppender, read_jsonl

from eval_harness.judges import (
    API_KEY_ENV,
    Judge,
    JudgeError,
    JudgeRequestError,
    JudgeRetriesExhausted,
    JudgeSettings,
    OpenAICompatibleJudge,
)
from eval_harness.judges.openai_compat import redact_key
from eval_harness.mt_bench.data import MTBench, Question

logger = logging.getLogger(__name__)

__all__ = ["API_KEY_ENV", "PARSE_FAILURE", "JudgeError", "JudgeRequestError", "JudgeSettings", "judge_answers",
           "judge_endpoint", "open_judge", "parse_score", "run_judge_tasks"]

PARSE_FAILURE = -1  # FastChat's score for a verdict without a rating; never averaged
ERROR_JUDGMENT = "$ERROR$"  # FastChat's judgment text for an item the judge never answered
ChatClient = OpenAICompatibleJudge  # the name this client had before the judge protocol

_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
# A judge that drops one bracket still writes "Rating: [7]"; a bare "[1]" elsewhere is a citation.
_RATING_ONE_BRACKET = re.compile(r"rating\s*[:=]?\s*\*{0,2}\s*\[\s*(\d+(?:\.\d+)?)\s*\]", re.IGNORECASE)


VERDICT_TAIL = "Rating: [[N]]"  # what FastChat's single-grading prompts ask the verdict to end with


def single_verdict_regex(max_tokens: int, limit: int = 1000) -> str:
    """A regular expression for a single-grading verdict in FastChat's format: an explanation in printable
    ASCII without square brackets, then ``Rating: [[N]]`` with N in 1-10 (``compare --judge-constrain-verdict``:
    the judge server enforces it). The explanation is at most ``max_tokens`` - 16 characters (and ``limit``):
    an ASCII character is one byte and a token at least one byte, so the rating always fits in the judge's
    token budget (a non-ASCII character could take several tokens)."""
    room = min(limit, max_tokens - 16)
    if room < 0:
        raise ValueError(f"max_tokens: {max_tokens} leaves no room for {VERDICT_TAIL!r}; expected 16 or more")
    return r"[ -Z\\^-~\n]{0,%d}Rating: \[\[(10|[1-9])\]\]" % room


@dataclass(frozen=True)
class Grading:
    """Who judges, how often each answer is judged, and how many requests run at once."""

    judge: Judge
    repeats: int = 1
    concurrency: int = 4
    rejudge_failed: bool = False  # re-ask stored parse failures and errors (the rest stays cached)


def open_judge(judge: JudgeSettings | Judge, repeats: int | None = None, concurrency: int | None = None,
               rejudge_failed: bool | None = None) -> Grading:
    """A :class:`Grading` from settings (the OpenAI-compatible judge) or from any :class:`Judge`."""
    if isinstance(judge, JudgeSettings):
        rejudge = judge.rejudge_failed if rejudge_failed is None else rejudge_failed
        return Grading(OpenAICompatibleJudge(judge), repeats or judge.repeats, concurrency or judge.concurrency,
                       bool(rejudge))
    if not isinstance(judge, Judge):
        raise TypeError(f"judge: got {type(judge).__name__}; expected JudgeSettings or an eval_harness.judges.Judge")
    return Grading(judge, repeats or 1, concurrency or 4, bool(rejudge_failed))


def content_key(judge: Judge, models: list[str], system: str, *users: str) -> str:
    """The content address of one judgment: the judged ``models`` (their ids, as FastChat's records
    name them), the judge model, endpoint and settings, and the full prompts.

    The prompts hold the question, the answer, the reference answer and (pairwise) the baseline's
    answer, so a regenerated answer or a retrained baseline never matches an old verdict.
    """
    identity = {**(judge.identity() or {}), "model": judge.model, "endpoint": judge_endpoint(judge)}
    identity.pop("rejudge_failed", None)
    blob = json.dumps([identity, models, system, *users], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def served_model(judge: Judge) -> str | None:
    """The model name the server put in this thread's last reply, when the judge tells it."""
    served = getattr(judge, "served_model", None)
    return served() if callable(served) else None


def is_failed(record: dict) -> bool:
    """A stored judgment without a usable verdict: a parse failure or an error."""
    if "error" in record:
        return True
    if "score" in record:
        return record["score"] == PARSE_FAILURE
    return "error" in (record.get("g1_winner"), record.get("g2_winner"))


def newest_round(records: list[dict]) -> list[dict]:
    """One item's records (file order) of its newest ``judge_key``: older ones judged other answers."""
    newest_key = records[-1].get("judge_key")
    return [r for r in records if r.get("judge_key") == newest_key] if newest_key else records


def latest_valid_of(records: list[dict]) -> dict:
    """The latest record with a usable verdict, else the latest record."""
    valid = [r for r in records if not is_failed(r)]
    return (valid or records)[-1]


def done_keys(records: list[dict], rejudge_failed: bool) -> set[tuple[str, int]]:
    """(judge_key, repeat) of the stored judgments that count as done; the latest record of each decides.

    Records without ``judge_key`` (written before content addressing) never match: judged once more.
    """
    latest: dict[tuple[str, int], dict] = {}
    for r in records:
        if r.get("judge_key"):
            latest[(r["judge_key"], int(r.get("repeat", 0)))] = r
    return {k for k, r in latest.items() if not (rejudge_failed and is_failed(r))}


def parse_score(judgment: str) -> float:
    """The rating in a judge's verdict, or -1 when there is none in 1-10.

    The first ``[[N]]`` is the rating, as FastChat's gen_judgment.py takes it (``re.search``):
    "[[2]] ... a perfect [[10]] would need more" is a 2, and scores stay comparable with FastChat's.
    """
    match = _RATING.search(judgment) or _RATING_ONE_BRACKET.search(judgment)
    if not match:
        return PARSE_FAILURE
    score = float(match.group(1))
    return score if 1 <= score <= 10 else PARSE_FAILURE


def judge_endpoint(judge: Judge) -> str | None:
    """Where the judge's verdicts come from (its base URL); part of every judgment's identity."""
    endpoint = getattr(judge, "endpoint", None)
    if endpoint is None:
        endpoint = (judge.identity() or {}).get("base_url")
    return None if endpoint is None else str(endpoint)


def judge_prompt(
    bench: MTBench, kind: str, question: Question, turn: int, answers: dict[str, list[str]]
) -> tuple[str, str, str]:
    """(prompt name, system prompt, user prompt) as FastChat builds them.

    ``kind`` is "single" (``answers={"": turns}``) or "pair" (``answers={"_a": turns_a, "_b": turns_b}``).
    Reference categories get FastChat's math prompt and GPT-4's reference answers, whoever judges.
    """
    base = {"single": ("single-v1", "single-math-v1"), "pair": ("pair-v2", "pair-math-v1")}[kind]
    name = base[question.needs_reference] + ("-multi-turn" if turn == 2 else "")
    try:
        prompt = bench.judge_prompts[name]
    except KeyError:
        raise ValueError(f"{bench.source / 'judge_prompts.jsonl'}: no prompt named {name!r}") from None
    fields: dict[str, str] = {}
    if turn == 1:
        fields["question"] = question.turns[0]
        fields.update({f"answer{suffix}": turns[0] for suffix, turns in answers.items()})
    else:
        fields.update(question_1=question.turns[0], question_2=question.turns[1])
        for suffix, turns in answers.items():
            fields.update({f"answer{suffix}_1": turns[0], f"answer{suffix}_2": turns[1]})
    if question.needs_reference:
        try:
            ref = bench.references[question.question_id]
        except KeyError:
            raise ValueError(
                f"{bench.source / 'reference_answer' / 'gpt-4.jsonl'}: no reference answer for question "
                f"{question.question_id} ({question.category}); expected one for every math/reasoning/coding question"
            ) from None
        fields["ref_answer_1"] = ref[0]
        if turn == 2:
            fields["ref_answer_2"] = ref[1]
    return name, prompt.system_prompt, prompt.prompt_template.format(**fields)


def single_prompt(bench: MTBench, question: Question, answer_turns: list[str], turn: int) -> tuple[str, str, str]:
    return judge_prompt(bench, "single", question, turn, {"": answer_turns})


def judgment_key(record: dict) -> tuple:
    """Identity of a single-grading record: one per question, model, judge prompt, turn and repeat."""
    return (
        int(record["question_id"]),
        record["model"],
        tuple(record["judge"]),
        int(record["turn"]),
        int(record.get("repeat", 0)),
    )


@dataclass(frozen=True)
class SingleTask:
    question: Question
    turn: int  # 1 or 2
    repeat: int
    prompt_name: str
    system: str
    user: str
    key: str  # content_key of (judge, system, user)


def judge_answers(
    bench: MTBench,
    questions: list[Question],
    answers: dict[int, list[str]],
    judgment_file: Path,
    *,
    model_id: str,
    grading: Grading,
) -> dict:
    """Grade both turns of every answer ``grading.repeats`` times, skipping judgments already stored.

    Returns counts ``{"requested", "stored", "errors", "refused", "keys"}``: ``errors`` items stored as
    errors after every retry; ``refused`` requests (HTTP 400 etc.) logged and left for the next run;
    ``keys`` the (judge_key, repeat) of every current judgment, judged now or before.
    """
    judge_model, endpoint = grading.judge.model, judge_endpoint(grading.judge)
    done = done_keys(read_jsonl(judgment_file), grading.rejudge_failed)
    tasks, keys = [], set()
    for q in questions:
        if q.question_id not in answers:
            raise ValueError(f"no answer of model {model_id!r} to question {q.question_id}; generate answers first")
        for turn in (1, 2):
            name, system, user = single_prompt(bench, q, answers[q.question_id], turn)
            key = content_key(grading.judge, [model_id], system, user)
            for repeat in range(grading.repeats):
                keys.add((key, repeat))
                if (key, repeat) not in done:
                    tasks.append(SingleTask(q, turn, repeat, name, system, user, key))

    def grade(judge: Judge, task: SingleTask, error: str | None = None) -> dict:
        judgment = ERROR_JUDGMENT if error is not None else redact_key(judge.complete(task.system, task.user))
        return {
            "question_id": task.question.question_id,
            "model": model_id,
            "judge": [judge_model, task.prompt_name],
            "judge_endpoint": endpoint,
            "judge_key": task.key,
            "judge_served_model": None if error is not None else served_model(judge),
            "user_prompt": task.user,
            "judgment": judgment,
            "score": PARSE_FAILURE if error is not None else parse_score(judgment),
            "turn": task.turn,
            "repeat": task.repeat,
            "tstamp": time.time(),
            **({"error": error} if error is not None else {}),
        }

    counts = run_judge_tasks(tasks, grade, judgment_file, grading, f"MT-Bench judge ({model_id})")
    return {**counts, "keys": keys}


def run_judge_tasks(tasks: list, grade: Callable[..., dict], judgment_file: Path, grading: Grading,
                    desc: str) -> dict:
    """Run ``grade(judge, task) -> record`` over ``tasks`` on ``grading.concurrency`` threads.

    Each record is appended the moment it exists. A per-request refusal (:class:`JudgeRequestError`)
    skips that task. An item that fails after every retry (:class:`JudgeRetriesExhausted`) is stored
    as ``grade(judge, task, error=message)`` once the judge has answered something in this run;
    failures with no verdict in between (more than ``concurrency + 1`` in a row, or all of a run)
    mean the judge is down: the run stops and those are not stored. Any other error, or Ctrl-C,
    stops the run at once (queued tasks cancelled, back-offs cut short via ``judge.cancel()``).
    """
    from tqdm.auto import tqdm

    counts = {"requested": len(tasks), "stored": 0, "errors": 0, "refused": 0}
    if not tasks:
        return counts
    with JsonlAppender(judgment_file) as out, tqdm(total=len(tasks), desc=desc) as bar:
        book = _Book(out, bar, counts, breaker=grading.concurrency + 2)
        with ThreadPoolExecutor(max_workers=grading.concurrency) as pool:
            futures = [pool.submit(book.run, grade, grading.judge, task) for task in tasks]
            clean = False
            try:
                finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
                clean = True
            finally:
                # on an error or Ctrl-C, queued tasks must not keep the pool busy on the way out,
                # nor a running one sleep out its back-off
                book.stop.set()
                for future in futures:
                    future.cancel()
                cancel = getattr(grading.judge, "cancel", None)
                if callable(cancel) and (not clean or any(f.done() and not f.cancelled() and f.exception()
                                                          for f in futures)):
                    cancel()
            failed = next((f for f in finished if not f.cancelled() and f.exception() is not None), None)
            if failed is not None:
                raise failed.exception()
        book.finish()
    return counts


class _Book:
    """The bookkeeping of one :func:`run_judge_tasks`: counts, and errors held until the judge proves alive."""

    def __init__(self, out: JsonlAppender, bar, counts: dict, breaker: int):
        self.out, self.bar, self.counts, self.breaker = out, bar, counts, breaker
        self.stop, self.lock = threading.Event(), threading.Lock()
        self.pending: list[dict] = []  # error records not yet followed by any verdict
        self.answered = False
        self.last_error: Exception | None = None

    def run(self, grade: Callable[..., dict], judge: Judge, task) -> None:
        if self.stop.is_set():
            return
        try:
            record = grade(judge, task)
        except JudgeRequestError as exc:
            logger.error("not judged (will be retried by the next run): %s", exc)
            with self.lock:
                self.counts["refused"] += 1
            return
        except JudgeRetriesExhausted as exc:
            self._failed(exc, grade(judge, task, error=str(exc)))
            return
        except BaseException:
            self.stop.set()
            raise
        with self.lock:
            self.answered = True
            self._write([*self.pending, record])
            self.pending.clear()

    def _failed(self, exc: JudgeRetriesExhausted, record: dict) -> None:
        with self.lock:
            self.last_error = exc
            if self.answered:
                logger.error("stored as an error (rejudge_failed asks again): %s", exc)
                return self._write([record])
            self.pending.append(record)
            if len(self.pending) < self.breaker:
                return
        self.stop.set()
        raise JudgeError(f"{exc}; {self.breaker} items in a row failed with no verdict in between: "
                         "the judge looks down, so none of them is stored") from None

    def _write(self, records: list[dict]) -> None:
        for record in records:
            self.out.write(record)
            self.counts["stored"] += 1
            self.counts["errors"] += "error" in record
            self.bar.update(1)

    def finish(self) -> None:
        """Store the held errors if the judge answered anything; stop if it answered nothing at all."""
        if self.pending and not self.answered:
            raise JudgeError(f"{self.last_error}; the judge answered none of this run's requests, "
                             "so nothing was stored") from None
        self._write(self.pending)
        self.pending.clear()
