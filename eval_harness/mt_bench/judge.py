"""Stage 2: single-answer grading by an LLM judge, as FastChat's llm_judge defines it.

The judge is any :class:`~eval_harness.judges.Judge` (by default the OpenAI-compatible one,
built from :class:`~eval_harness.judges.JudgeSettings`). Differences from FastChat's
gen_judgment.py: scores outside 1-10 and bare citations such as "[1]" are not taken as
ratings; an API error is never stored as a judgment; every judgment is appended as it
arrives, so an interrupted run resumes without judging anything twice. Each record also
names the judge's endpoint (``judge_endpoint``): verdicts of another endpoint serving a model
of the same name are never reused. Verdict texts are stored with the API key redacted.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lisa_formats.jsonl import JsonlAppender, read_jsonl

from eval_harness.judges import API_KEY_ENV, Judge, JudgeError, JudgeRequestError, JudgeSettings, OpenAICompatibleJudge
from eval_harness.judges.openai_compat import redact_key
from eval_harness.mt_bench.data import MTBench, Question

logger = logging.getLogger(__name__)

__all__ = ["API_KEY_ENV", "PARSE_FAILURE", "JudgeError", "JudgeRequestError", "JudgeSettings", "judge_answers",
           "judge_endpoint", "open_judge", "parse_score", "run_judge_tasks"]

PARSE_FAILURE = -1  # FastChat's score for a verdict without a rating; never averaged
ChatClient = OpenAICompatibleJudge  # the name this client had before the judge protocol

_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
# A judge that drops one bracket still writes "Rating: [7]"; a bare "[1]" elsewhere is a citation.
_RATING_ONE_BRACKET = re.compile(r"rating\s*[:=]?\s*\*{0,2}\s*\[\s*(\d+(?:\.\d+)?)\s*\]", re.IGNORECASE)


@dataclass(frozen=True)
class Grading:
    """Who judges, how often each answer is judged, and how many requests run at once."""

    judge: Judge
    repeats: int = 1
    concurrency: int = 4


def open_judge(judge: JudgeSettings | Judge, repeats: int | None = None, concurrency: int | None = None) -> Grading:
    """A :class:`Grading` from settings (the OpenAI-compatible judge) or from any :class:`Judge`."""
    if isinstance(judge, JudgeSettings):
        return Grading(OpenAICompatibleJudge(judge), repeats or judge.repeats, concurrency or judge.concurrency)
    if not isinstance(judge, Judge):
        raise TypeError(f"judge: got {type(judge).__name__}; expected JudgeSettings or an eval_harness.judges.Judge")
    return Grading(judge, repeats or 1, concurrency or 4)


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

    Returns counts ``{"requested", "stored", "errors"}``; requests refused one by one (HTTP 400 etc.)
    are logged and left for the next run, never stored.
    """
    judge_model, endpoint = grading.judge.model, judge_endpoint(grading.judge)
    done = {judgment_key(r) for r in read_jsonl(judgment_file) if r.get("judge_endpoint") == endpoint}
    tasks = []
    for q in questions:
        if q.question_id not in answers:
            raise ValueError(f"no answer of model {model_id!r} to question {q.question_id}; generate answers first")
        for turn in (1, 2):
            name, system, user = single_prompt(bench, q, answers[q.question_id], turn)
            for repeat in range(grading.repeats):
                record = {"question_id": q.question_id, "model": model_id, "judge": [judge_model, name], "turn": turn, "repeat": repeat}
                if judgment_key(record) not in done:
                    tasks.append(SingleTask(q, turn, repeat, name, system, user))

    def grade(judge: Judge, task: SingleTask) -> dict:
        judgment = redact_key(judge.complete(task.system, task.user))
        return {
            "question_id": task.question.question_id,
            "model": model_id,
            "judge": [judge_model, task.prompt_name],
            "judge_endpoint": endpoint,
            "user_prompt": task.user,
            "judgment": judgment,
            "score": parse_score(judgment),
            "turn": task.turn,
            "repeat": task.repeat,
            "tstamp": time.time(),
        }

    return run_judge_tasks(tasks, grade, judgment_file, grading, f"MT-Bench judge ({model_id})")


def run_judge_tasks(tasks: list, grade: Callable[[Judge, object], dict], judgment_file: Path, grading: Grading,
                    desc: str) -> dict:
    """Run ``grade(judge, task) -> record`` over ``tasks`` on ``grading.concurrency`` threads.

    Each record is appended the moment it exists. A per-request refusal (:class:`JudgeRequestError`)
    skips that task; any other error stops the run (queued tasks are cancelled) and is raised.
    """
    from tqdm.auto import tqdm

    counts = {"requested": len(tasks), "stored": 0, "errors": 0}
    if not tasks:
        return counts
    stop = threading.Event()
    lock = threading.Lock()

    def run(task, out: JsonlAppender, bar) -> None:
        if stop.is_set():
            return
        try:
            record = grade(grading.judge, task)
        except JudgeRequestError as exc:
            logger.error("not judged (will be retried by the next run): %s", exc)
            with lock:
                counts["errors"] += 1
            return
        except BaseException:
            stop.set()
            raise
        out.write(record)
        with lock:
            counts["stored"] += 1
            bar.update(1)

    with JsonlAppender(judgment_file) as out, tqdm(total=len(tasks), desc=desc) as bar:
        with ThreadPoolExecutor(max_workers=grading.concurrency) as pool:
            futures = [pool.submit(run, task, out, bar) for task in tasks]
            try:
                finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            finally:
                # on an error or Ctrl-C, queued tasks must not keep the pool busy on the way out
                stop.set()
                for future in futures:
                    future.cancel()
            failed = next((f for f in finished if not f.cancelled() and f.exception() is not None), None)
            if failed is not None:
                raise failed.exception()
    return counts
