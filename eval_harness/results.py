"""Everything the harness produces, on disk as soon as it exists.

Layout under the report dir (``--output``)::

    results.json                      # everything, rewritten after each result (schema_version)
    results/<run>/<task>.json         # one TaskResult per (run, task): the resume cache
    samples/<run>/<task>.jsonl        # lm-eval's per-sample log (prompt, response, filtered answer, score)
    tasks/                            # the task YAMLs generated for this report
    mt_bench/                         # answers and judgments (FastChat's JSONL formats)

Whole files are written with :mod:`lisa_formats.atomic` (a Ctrl-C leaves the old file or the
new one, never half of one). ``results.json`` itself is written by :mod:`eval_harness.report` only.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lisa_formats.atomic import write_json_atomic

from eval_harness.discovery import Run

# 2: results.json also holds the report's leaderboard, statistics and provenance (eval_harness.report)
SCHEMA_VERSION = 2


@dataclass
class Metric:
    value: float | None
    stderr: float | None = None


@dataclass
class TaskResult:
    """The score of one run on one task, and what it was computed with."""

    run: str
    task: str  # the name the user asked for: "gsm8k", "pubmedqa", "mt_bench", or any lm-eval task
    metrics: dict[str, Metric]  # e.g. "exact_match,strict-match", "acc,none", "overall"
    n_samples: dict[str, int | None]  # {"original": size of the test split, "effective": items scored}
    settings: dict[str, Any]  # what makes the result reusable: limit, few-shot, model paths, data...
    seconds: float
    files: dict[str, str] = field(default_factory=dict)  # per-sample logs, answers, judgments
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the MT-Bench summary as returned

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: Path | str = "<dict>") -> "TaskResult":
        try:
            metrics = {k: Metric(**v) for k, v in data["metrics"].items()}
            return cls(**{**data, "metrics": metrics})
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{source}: not a TaskResult record ({exc})") from None


class ResultStore:
    """Per-(run, task) results under ``root``: the cache that makes re-runs resume."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def result_path(self, run: str, task: str) -> Path:
        return self.root / "results" / run / f"{task}.json"

    def samples_path(self, run: str, task: str) -> Path:
        return self.root / "samples" / run / f"{task}.jsonl"

    def load(self, run: str, task: str) -> TaskResult | None:
        path = self.result_path(run, task)
        if not path.exists():
            return None
        try:
            return TaskResult.from_json(json.loads(path.read_text()), path)
        except (json.JSONDecodeError, ValueError):
            return None  # unreadable cache: recompute

    def cached(self, run: str, task: str, settings: dict[str, Any]) -> TaskResult | None:
        """The stored result when it was computed with exactly ``settings`` and is complete.

        A result with missing parts (``details["complete"]`` false: judgments the judge refused or
        answered unusably) is shown by the report but never reused: the next run asks again."""
        found = self.load(run, task)
        if found is None or (found.details or {}).get("complete") is False:
            return None
        if json.loads(json.dumps(found.settings, default=str)) != json.loads(json.dumps(settings, default=str)):
            return None
        return found

    def save(self, result: TaskResult) -> Path:
        path = self.result_path(result.run, result.task)
        write_json_atomic(path, result.to_json())
        return path


@dataclass
class RunOutcome:
    """One run and what ``compare`` made of it so far: results by task, and the tasks that failed."""

    run: Run
    results: dict[str, TaskResult] = field(default_factory=dict)
    task_errors: dict[str, str] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.run.to_json(),
            "results": {task: result.to_json() for task, result in self.results.items()},
            "task_errors": self.task_errors,
            "cached": self.cached,
        }


class OutputUnavailable(RuntimeError):
    """The output folder cannot be used: not writable, or locked by another ``compare``."""


class OutputLock:
    """An exclusive lock on a report folder, held while one ``compare`` writes into it.

    Two ``compare`` runs on one folder would each judge and answer the same items (their JSONL
    appends interleave); the second one is refused instead. The lock is ``flock`` on
    ``.compare.lock`` (holding the holder's pid): the kernel drops it when the process dies,
    so a killed run never leaves a stale lock behind.
    """

    FILE = ".compare.lock"

    def __init__(self, output: Path):
        self.output = Path(output)
        self.path = self.output / self.FILE
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        import fcntl

        try:
            self.output.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputUnavailable(
                f"cannot write to --output {self.output}: {exc.strerror or exc}; choose a folder you can write to"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputUnavailable(
                f"--output {self.output} is in use by another compare (pid {holder}); wait for it to finish, "
                "or pass another --output (two runs on one folder would judge and answer the same items twice)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
