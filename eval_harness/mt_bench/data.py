"""MT-Bench's questions, judge prompts and GPT-4 reference answers.

Read from a local directory laid out like FastChat's ``data/mt_bench`` (``--mt-bench-dir``),
or downloaded once from FastChat's repository at a pinned commit into a cache
(``$EVAL_HARNESS_CACHE`` or ``~/.cache/eval_harness``) and checked against known hashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lisa_formats.jsonl import read_jsonl

from eval_harness.pinned import cache_root, download
from eval_harness.subset import Subset, choose

FASTCHAT_COMMIT = "0e6d3e4beaab66f4d3f93db72541a4abab8af28d"
FASTCHAT_RAW = f"https://raw.githubusercontent.com/lm-sys/FastChat/{FASTCHAT_COMMIT}/fastchat/llm_judge/data"

# local name (layout of FastChat's data/mt_bench, with judge_prompts.jsonl beside the questions)
# -> (path under FASTCHAT_RAW, first 16 hex digits of its sha256)
FILES = {
    "question.jsonl": ("mt_bench/question.jsonl", "119565adbab82227"),
    "judge_prompts.jsonl": ("judge_prompts.jsonl", "fd283293406d024f"),
    "reference_answer/gpt-4.jsonl": ("mt_bench/reference_answer/gpt-4.jsonl", "f957a5bc977badb6"),
}

# FastChat's NEED_REF_CATS: these are judged against the GPT-4 reference answers.
NEED_REF_CATEGORIES = frozenset({"math", "reasoning", "coding", "arena-hard-200"})

# FastChat's gen_model_answer temperature_config; below 1e-4 decoding is greedy.
CATEGORY_TEMPERATURE = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
    "arena-hard-200": 0.0,
}
DEFAULT_TEMPERATURE = 0.7


@dataclass(frozen=True)
class Question:
    question_id: int
    category: str
    turns: tuple[str, str]

    @property
    def temperature(self) -> float:
        return CATEGORY_TEMPERATURE.get(self.category, DEFAULT_TEMPERATURE)

    @property
    def needs_reference(self) -> bool:
        return self.category in NEED_REF_CATEGORIES


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    type: str
    system_prompt: str
    prompt_template: str
    output_format: str


@dataclass(frozen=True)
class MTBench:
    questions: list[Question]
    judge_prompts: dict[str, JudgePrompt]
    references: dict[int, tuple[str, str]]  # GPT-4's two answers per question_id
    source: Path


def cache_dir() -> Path:
    return cache_root() / "mt_bench" / FASTCHAT_COMMIT[:12]


def locate(mt_bench_dir: Path | None = None) -> Path:
    """The directory holding the three files: ``mt_bench_dir``, or the download cache."""
    if mt_bench_dir is not None:
        mt_bench_dir = Path(mt_bench_dir)
        missing = [name for name in FILES if not (mt_bench_dir / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"mt_bench_dir {mt_bench_dir}: missing {', '.join(missing)}; expected FastChat's "
                f"data/mt_bench layout: {', '.join(FILES)}"
            )
        return mt_bench_dir
    target = cache_dir()
    for name, (remote, sha16) in FILES.items():
        download(f"{FASTCHAT_RAW}/{remote}", target / name, sha16,
                 instead="pass mt_bench_dir= (--mt-bench-dir) pointing at a copy of FastChat's data/mt_bench "
                 f"(FastChat commit {FASTCHAT_COMMIT})")
    return target


def load(mt_bench_dir: Path | None = None) -> MTBench:
    source = locate(mt_bench_dir)
    questions = []
    for record in read_jsonl(source / "question.jsonl"):
        turns = record.get("turns")
        if not isinstance(turns, list) or len(turns) != 2:
            raise ValueError(
                f"{source / 'question.jsonl'}: question {record.get('question_id')!r} has turns {turns!r}; "
                "expected a list of 2 strings"
            )
        questions.append(Question(int(record["question_id"]), record["category"], (turns[0], turns[1])))
    prompts = {
        record["name"]: JudgePrompt(
            record["name"], record["type"], record["system_prompt"], record["prompt_template"], record["output_format"]
        )
        for record in read_jsonl(source / "judge_prompts.jsonl")
    }
    references = {
        int(record["question_id"]): tuple(record["choices"][0]["turns"][:2])
        for record in read_jsonl(source / "reference_answer" / "gpt-4.jsonl")
    }
    return MTBench(questions, prompts, references, source)


def select(questions: list[Question], limit: int | None) -> list[Question]:
    """The questions ``--limit`` scores: all of them, or a seeded subset with every category in
    proportion (:func:`eval_harness.subset.choose`), in file order."""
    return [questions[i] for i in subset(questions, limit).indices]


def subset(questions: list[Question], limit: int | None) -> Subset:
    return choose([q.category for q in questions], limit, stratified_by="category")
