"""Stage 2: single-answer grading by an LLM judge, as FastChat's llm_judge defines it.

The judge is any OpenAI-compatible ``/v1/chat/completions`` endpoint (OpenAI, vLLM,
FastChat's openai_api_server, Ollama). Differences from FastChat's gen_judgment.py:
scores outside 1-10 and bare citations such as "[1]" are not taken as ratings; 429/5xx
and timeouts are retried with exponential backoff; 401/403/404 stop the run at once;
an API error is never stored as a judgment; every judgment is appended as it arrives,
so an interrupted run resumes without judging anything twice.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from eval_harness.mt_bench.data import MTBench, Question
from eval_harness.mt_bench.jsonl import JsonlAppender, read_jsonl

logger = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
API_KEY_ENV = "OPENAI_API_KEY"
PARSE_FAILURE = -1  # FastChat's score for a verdict without a rating; never averaged

_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
# A judge that drops one bracket still writes "Rating: [7]"; a bare "[1]" elsewhere is a citation.
_RATING_ONE_BRACKET = re.compile(r"rating\s*[:=]?\s*\*{0,2}\s*\[\s*(\d+(?:\.\d+)?)\s*\]", re.IGNORECASE)


@dataclass(frozen=True)
class JudgeSettings:
    """Which judge grades the answers. The API key comes from ``$OPENAI_API_KEY`` only."""

    model: str = "gpt-4"
    base_url: str | None = None  # None: OpenAI; e.g. http://localhost:8000/v1 for vLLM/FastChat/Ollama
    repeats: int = 1
    concurrency: int = 4
    max_tokens: int = 2048  # FastChat's judge call: temperature 0, 2048 tokens
    temperature: float = 0.0
    timeout_s: float = 120.0
    max_retries: int = 6
    backoff_s: float = 1.0  # first retry delay; doubles per attempt, capped at 60 s

    def __post_init__(self):
        for name, minimum in (("repeats", 1), ("concurrency", 1), ("max_tokens", 1), ("max_retries", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"JudgeSettings.{name}: got {value!r}; expected an integer >= {minimum}")
        if not self.model:
            raise ValueError("JudgeSettings.model: got an empty name; expected the judge model's name, e.g. gpt-4")


class JudgeError(RuntimeError):
    """The judge endpoint cannot be used (bad key, unknown model or URL, retries exhausted)."""


class JudgeRequestError(RuntimeError):
    """The endpoint refused this one request (e.g. 400 prompt too long); other items go on."""


def parse_score(judgment: str) -> float:
    """The rating in a judge's verdict, or -1 when there is none in 1-10."""
    matches = _RATING.findall(judgment) or _RATING_ONE_BRACKET.findall(judgment)
    if not matches:
        return PARSE_FAILURE
    # the format instruction puts the rating after the explanation: the last one is the verdict
    score = float(matches[-1])
    return score if 1 <= score <= 10 else PARSE_FAILURE


class ChatClient:
    """A minimal OpenAI chat-completions client whose errors can never carry the API key."""

    def __init__(self, settings: JudgeSettings):
        import httpx

        self.settings = settings
        self.url = (settings.base_url or OPENAI_BASE_URL).rstrip("/") + "/chat/completions"
        self._key = os.environ.get(API_KEY_ENV) or None
        if self._key is None and settings.base_url is None:
            raise JudgeError(f"{API_KEY_ENV} is not set; the OpenAI API needs it (or set base_url to a local judge)")
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._http = httpx.Client(headers=headers, timeout=settings.timeout_s)
        self._rng = random.Random(0)  # jitter only; seeded so runs are repeatable

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def complete(self, system: str, user: str) -> str:
        import httpx

        s = self.settings
        body = {
            "model": s.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
        }
        where = f"judge {s.model!r} at {self.url}"
        for attempt in range(s.max_retries + 1):
            last = attempt == s.max_retries
            try:
                response = self._http.post(self.url, json=body)
            except httpx.TransportError as exc:  # timeouts, refused/reset connections
                problem = f"{type(exc).__name__}: {self.redact(str(exc))}"
                if last:
                    raise JudgeError(f"{where}: {problem}; gave up after {attempt + 1} attempts") from None
                self._sleep(attempt, None, problem)
                continue
            status = response.status_code
            if status == 200:
                return self._content(response, where)
            detail = self.redact(response.text[:500])
            if status in (401, 403):
                raise JudgeError(
                    f"{where}: HTTP {status} ({detail}); the API key in ${API_KEY_ENV} was refused "
                    "(key not shown); check it is set and valid for this endpoint"
                )
            if status == 404:
                raise JudgeError(
                    f"{where}: HTTP 404 ({detail}); expected an OpenAI-compatible endpoint serving model "
                    f"{s.model!r}: check base_url (it usually ends in /v1) and the model name"
                )
            if status == 429 or status >= 500:
                if last:
                    raise JudgeError(f"{where}: HTTP {status} ({detail}); gave up after {attempt + 1} attempts")
                self._sleep(attempt, response.headers.get("retry-after"), f"HTTP {status}")
                continue
            raise JudgeRequestError(f"{where}: HTTP {status} ({detail})")
        raise AssertionError("unreachable")

    def _content(self, response, where: str) -> str:
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeRequestError(
                f"{where}: reply is not a chat completion ({self.redact(response.text[:300])!r}); "
                "expected choices[0].message.content"
            ) from None
        if not isinstance(content, str):
            raise JudgeRequestError(f"{where}: choices[0].message.content is {content!r}; expected a string")
        return content

    def _sleep(self, attempt: int, retry_after: str | None, problem: str) -> None:
        delay = min(60.0, self.settings.backoff_s * 2**attempt) * (1 + 0.1 * self._rng.random())
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        logger.warning("judge %s: %s; retry %d in %.2fs", self.settings.model, problem, attempt + 1, delay)
        time.sleep(delay)

    def close(self) -> None:
        self._http.close()


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
    settings: JudgeSettings,
) -> dict:
    """Grade both turns of every answer ``settings.repeats`` times, skipping judgments already stored.

    Returns counts ``{"requested", "stored", "errors"}``; requests refused one by one (HTTP 400 etc.)
    are logged and left for the next run, never stored.
    """
    done = {judgment_key(r) for r in read_jsonl(judgment_file)}
    tasks = []
    for q in questions:
        if q.question_id not in answers:
            raise ValueError(f"no answer of model {model_id!r} to question {q.question_id}; generate answers first")
        for turn in (1, 2):
            name, system, user = single_prompt(bench, q, answers[q.question_id], turn)
            for repeat in range(settings.repeats):
                record = {"question_id": q.question_id, "model": model_id, "judge": [settings.model, name], "turn": turn, "repeat": repeat}
                if judgment_key(record) not in done:
                    tasks.append(SingleTask(q, turn, repeat, name, system, user))

    def grade(client: ChatClient, task: SingleTask) -> dict:
        judgment = client.complete(task.system, task.user)
        return {
            "question_id": task.question.question_id,
            "model": model_id,
            "judge": [settings.model, task.prompt_name],
            "user_prompt": task.user,
            "judgment": judgment,
            "score": parse_score(judgment),
            "turn": task.turn,
            "repeat": task.repeat,
            "tstamp": time.time(),
        }

    return run_judge_tasks(tasks, grade, judgment_file, settings, f"MT-Bench judge ({model_id})")


def run_judge_tasks(tasks: list, grade, judgment_file: Path, settings: JudgeSettings, desc: str) -> dict:
    """Run ``grade(client, task) -> record`` over ``tasks`` on ``settings.concurrency`` threads.

    Each record is appended the moment it exists. A per-request refusal (:class:`JudgeRequestError`)
    skips that task; any other error stops the run (queued tasks are cancelled) and is raised.
    """
    from tqdm.auto import tqdm

    counts = {"requested": len(tasks), "stored": 0, "errors": 0}
    if not tasks:
        return counts
    client = ChatClient(settings)
    stop = threading.Event()
    lock = threading.Lock()

    def run(task, out: JsonlAppender, bar) -> None:
        if stop.is_set():
            return
        try:
            record = grade(client, task)
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

    try:
        with JsonlAppender(judgment_file) as out, tqdm(total=len(tasks), desc=desc) as bar:
            with ThreadPoolExecutor(max_workers=settings.concurrency) as pool:
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
    finally:
        client.close()
    return counts
