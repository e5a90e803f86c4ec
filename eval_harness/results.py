"""Everything the harness produces, on disk as soon as it exists.

Layout under the report dir (``--output``)::

    results.json                      # everything, rewritten after each result (schema_version)
    results/<run>/<task>.json         # one TaskResult per (run, task): the resume cache
    samples/<run>/<task>.jsonl        # lm-eval's per-sample log (prompt, response, filtered answer, score)
    tasks/                            # the task YAMLs generated for this report
    mt_bench/                         # answers and judgments (FastChat's JSONL formats)

Writes go through a temporary file and ``os.replace``, so a Ctrl-C leaves either the old
file or the new one, never half of one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from lisa_plugin.history import write_text_atomic

# 2: results.json also holds the report's leaderboard, statistics and provenance (eval_harness.report)
SCHEMA_VERSION = 2


# One atomic writer for both packages (lisa_history.json is written with it too).
atomic_write_text = write_text_atomic


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_jsonl(path: Path, records: Iterable[Any]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in records))


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
        """The stored result when it was computed with exactly ``settings``."""
        found = self.load(run, task)
        if found is None:
            return None
        if json.loads(json.dumps(found.settings, default=str)) != json.loads(json.dumps(settings, default=str)):
            return None
        return found

    def save(self, result: TaskResult) -> Path:
        path = self.result_path(result.run, result.task)
        atomic_write_json(path, result.to_json())
        return path
