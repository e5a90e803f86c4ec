"""``compare``: evaluate every run (and the base model as "Vanilla") on every task.

Each (run, task) result is written the moment it exists and reused by the next
invocation when it was computed with the same settings; ``results.json`` is rewritten
after each one, so a Ctrl-C loses at most the task in progress.
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from eval_harness.discovery import Discovery, Run, discover_runs
from eval_harness.lm_eval_runner import (
    HEADLINE_METRICS,
    DataError,
    LmEvalTask,
    check_task_names,
    evaluate_task,
    load_lm,
    prepare_tasks,
    task_manager,
)
from eval_harness.results import SCHEMA_VERSION, Metric, ResultStore, TaskResult, atomic_write_json, atomic_write_text

MT_BENCH = "mt_bench"
DEFAULT_TASKS = (MT_BENCH, "gsm8k", "pubmedqa")


@dataclass
class CompareSettings:
    """Every option of ``compare``; secrets (the judge's API key) never go in here."""

    runs_dir: Path
    output: Path
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    limit: int | None = None
    judge_model: str | None = None
    judge_base_url: str | None = None
    judge_repeats: int = 1
    judge_concurrency: int = 4
    pairwise_baseline: str | None = None  # run name: also judge every other run against it (pair-v2)
    data_dir: Path | None = None
    mt_bench_dir: Path | None = None
    gsm8k_fewshot: int = 5
    pubmedqa_fewshot: int = 5
    batch_size: str = "1"
    dtype: str = "auto"
    device: str = "cpu"
    max_new_tokens: int = 1024
    template: str | None = None
    base_model: str | None = None
    methods: dict[str, str] = field(default_factory=dict)
    run_settings: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass
class RunOutcome:
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


def _weights_fingerprint(path: str | None) -> list[list[Any]]:
    """Size and mtime of the weight files: a retrained run in the same dir invalidates the cache."""
    if not path or not Path(path).is_dir():
        return []
    return [
        [p.name, p.stat().st_size, int(p.stat().st_mtime)]
        for p in sorted(Path(path).iterdir())
        if p.suffix in (".safetensors", ".bin")
    ]


class Comparison:
    def __init__(self, settings: CompareSettings, log: TextIO | None = None):
        self.settings = settings
        self.log = log or sys.stderr
        self.store = ResultStore(settings.output)
        self.problems: list[str] = []
        self.outcomes: list[RunOutcome] = []
        self.discovery: Discovery | None = None
        self.started = time.time()

    # ----------------------------------------------------------------- messages and files

    def say(self, message: str) -> None:
        print(f"[compare {time.time() - self.started:7.1f}s] {message}", file=self.log, flush=True)

    def write_report(self, complete: bool = False) -> Path:
        path = self.settings.output / "results.json"
        atomic_write_json(
            path,
            {
                "schema_version": SCHEMA_VERSION,
                "generated_by": "python -m eval_harness compare",
                "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "complete": complete,
                "settings": self.settings.to_json(),
                "base_model": self.discovery.base_model if self.discovery else None,
                "tasks": list(self.settings.tasks),
                "problems": self.problems,
                "runs": [outcome.to_json() for outcome in self.outcomes],
            },
        )
        return path

    # ----------------------------------------------------------------- the run

    def run(self) -> int:
        s = self.settings
        s.output.mkdir(parents=True, exist_ok=True)
        self.discovery = discover_runs(
            s.runs_dir, exclude=[s.output], base_model=s.base_model,
            method_overrides=s.methods, setting_overrides=s.run_settings,
        )
        self.problems.extend(self.discovery.problems)
        for problem in self.discovery.problems:
            self.say(f"PROBLEM {problem}")
        if s.pairwise_baseline:
            names = [run.name for run in self.discovery.runs]
            if s.pairwise_baseline not in names:
                self.problems.append(
                    f"--pairwise-baseline: no run named {s.pairwise_baseline!r}; runs: {', '.join(names)}"
                )
                self.say(f"PROBLEM {self.problems[-1]}")
            # The baseline's answers must exist before the others are judged against them.
            self.discovery.runs.sort(key=lambda run: run.name != s.pairwise_baseline)
        self.outcomes = [RunOutcome(run) for run in self.discovery.runs]
        for run in self.discovery.runs:
            detail = ", ".join(f"{k}={v}" for k, v in run.settings.items() if k in ("gamma", "K", "r", "alpha"))
            self.say(f"run {run.name}: {run.method}{' (' + detail + ')' if detail else ''}"
                     f"{' adapter on ' + str(run.base_model) if run.adapter_path else ''}")
            for warning in run.warnings:
                self.say(f"  warning: {warning}")
            for error in run.errors:
                self.say(f"  ERROR {error}; not evaluated")
                self.problems.append(f"run {run.name}: {error}")
        if not any(run.ok for run in self.discovery.runs):
            self.problems.append(f"{s.runs_dir}: no run to evaluate")
            self.say(f"PROBLEM {s.runs_dir}: no run to evaluate")
        lm_tasks, manager = self._prepare_lm_eval_tasks()
        self.write_report()
        todo = [(o, t) for o in self.outcomes if o.run.ok for t in s.tasks]
        done = 0
        for outcome in self.outcomes:
            if not outcome.run.ok:
                continue
            lm = None
            for task in s.tasks:
                done += 1
                prefix = f"[{done}/{len(todo)}] {outcome.run.name} / {task}"
                try:
                    if task == MT_BENCH:
                        lm = _release(lm)  # MT-Bench loads its own copy of the model
                        self._mt_bench(outcome, prefix)
                    elif task in lm_tasks:
                        lm = self._lm_eval(outcome, lm_tasks[task], manager, lm, prefix)
                    else:
                        continue  # the task could not be prepared; said so once already
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # one failing model or task must not stop the others
                    message = f"{type(exc).__name__}: {exc}"
                    outcome.task_errors[task] = message
                    self.problems.append(f"run {outcome.run.name} / {task}: {message}")
                    self.say(f"{prefix}: FAILED {message}")
                    if isinstance(exc, _ModelLoadError):
                        break
                self.write_report()
            lm = _release(lm)
        self.write_report(complete=True)
        return 0 if not self.problems else 1

    def _prepare_lm_eval_tasks(self) -> tuple[dict[str, LmEvalTask], Any]:
        s = self.settings
        names = [t for t in s.tasks if t != MT_BENCH]
        if not names:
            return {}, None
        fewshot = {"gsm8k": s.gsm8k_fewshot, "pubmedqa": s.pubmedqa_fewshot}
        tasks: list[LmEvalTask] = []
        for name in names:
            try:
                tasks += prepare_tasks([name], s.output, s.data_dir, fewshot)[0]
            except (DataError, OSError) as exc:
                self.problems.append(f"task {name}: {exc}")
                self.say(f"PROBLEM task {name}: {exc}; not evaluated")
        manager = task_manager(s.output / "tasks")
        for error in check_task_names(tasks, manager):
            self.problems.append(error)
            self.say(f"PROBLEM {error}")
        known = set(manager.all_tasks)
        return {t.name: t for t in tasks if t.lm_eval_name in known}, manager

    def _lm_eval(self, outcome: RunOutcome, task: LmEvalTask, manager, lm, prefix: str):
        s, run = self.settings, outcome.run
        key = {
            "model": run.model_path,
            "adapter": run.adapter_path,
            "weights": _weights_fingerprint(run.adapter_path or run.path or run.model_path),
            "data": task.data,
            "limit": s.limit,
            "num_fewshot": task.num_fewshot,
            "max_new_tokens": s.max_new_tokens,
            "dtype": s.dtype,
        }
        cached = self.store.cached(run.name, task.name, key)
        if cached is not None:
            outcome.results[task.name] = cached
            outcome.cached.append(task.name)
            self.say(f"{prefix}: done before ({self.store.result_path(run.name, task.name)}), skipped")
            return lm
        if lm is None:
            self.say(f"{prefix}: loading {run.model_path}{' + adapter ' + run.adapter_path if run.adapter_path else ''}")
            try:
                lm = load_lm(run, batch_size=s.batch_size, dtype=s.dtype, device=s.device)
            except Exception as exc:
                raise _ModelLoadError(f"cannot load the model: {type(exc).__name__}: {exc}") from exc
        self.say(f"{prefix}: evaluating ({task.num_fewshot}-shot, limit {s.limit or 'none'})")
        result = evaluate_task(
            lm, run.name, task, manager, limit=s.limit, max_new_tokens=s.max_new_tokens,
            samples_path=self.store.samples_path(run.name, task.name), settings=key,
        )
        self.store.save(result)
        outcome.results[task.name] = result
        self.say(f"{prefix}: {format_metrics(task.name, result)} "
                 f"(n={result.n_samples.get('effective')}, {result.seconds:.0f}s)")
        return lm

    def _mt_bench(self, outcome: RunOutcome, prefix: str) -> None:
        s, run = self.settings, outcome.run
        from eval_harness.mt_bench import JudgeSettings, run_mt_bench

        mt_bench_dir = s.mt_bench_dir
        if mt_bench_dir is None and s.data_dir is not None and (Path(s.data_dir) / MT_BENCH).is_dir():
            mt_bench_dir = Path(s.data_dir) / MT_BENCH
        judge = (
            JudgeSettings(model=s.judge_model, base_url=s.judge_base_url, repeats=s.judge_repeats,
                          concurrency=s.judge_concurrency)
            if s.judge_model else None
        )
        key = {
            "model": run.model_path, "adapter": run.adapter_path,
            "weights": _weights_fingerprint(run.adapter_path or run.path or run.model_path),
            "mt_bench_dir": str(mt_bench_dir) if mt_bench_dir else None, "limit": s.limit,
            "judge": {"model": s.judge_model, "base_url": s.judge_base_url, "repeats": s.judge_repeats},
            "template": s.template, "max_new_tokens": s.max_new_tokens, "dtype": s.dtype,
            "pairwise_baseline": s.pairwise_baseline,
        }
        baseline_answers = None
        if judge and s.pairwise_baseline and run.name != s.pairwise_baseline:
            baseline_answers = s.output / MT_BENCH / "model_answer" / f"{s.pairwise_baseline}.jsonl"
            if not baseline_answers.exists():
                raise RuntimeError(
                    f"--pairwise-baseline {s.pairwise_baseline}: its answers {baseline_answers} do not exist "
                    "(did its MT-Bench answering fail?)"
                )
        cached = self.store.cached(run.name, MT_BENCH, key)
        if cached is not None:
            outcome.results[MT_BENCH] = cached
            outcome.cached.append(MT_BENCH)
            self.say(f"{prefix}: done before, skipped")
            return
        self.say(f"{prefix}: answering{' and judging with ' + s.judge_model if judge else ' (no --judge-model: not judged)'}")
        start = time.time()
        summary = run_mt_bench(
            model_id=run.name, model_path=run.model_path, adapter_path=run.adapter_path,
            out_dir=s.output / MT_BENCH, mt_bench_dir=mt_bench_dir, judge=judge, limit=s.limit,
            template=s.template, max_new_tokens=s.max_new_tokens, device=s.device, dtype=s.dtype,
            batch_size=s.batch_size, pairwise_baseline=baseline_answers,
        )
        metrics = {
            name: Metric(value=float(summary[name]) if summary.get(name) is not None else None)
            for name in ("overall", "turn1", "turn2") if summary.get("judged")
        }
        result = TaskResult(
            run=run.name, task=MT_BENCH, metrics=metrics,
            n_samples={"original": None, "effective": summary.get("n_questions")},
            settings=key, seconds=round(time.time() - start, 2),
            files={k: str(summary[k]) for k in ("answers_file", "judgment_file") if summary.get(k)},
            details=summary,
        )
        self.store.save(result)
        outcome.results[MT_BENCH] = result
        self.say(f"{prefix}: {format_metrics(MT_BENCH, result) or 'answers written (not judged)'}")


def _release(lm) -> None:
    """Drop a loaded model and give its (GPU) memory back before the next one loads."""
    if lm is not None:
        del lm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
    return None


class _ModelLoadError(RuntimeError):
    """The run's model could not be loaded: skip its remaining tasks."""


# --------------------------------------------------------------------------- the summary table


def _pct(metric: Metric | None) -> str:
    if metric is None or metric.value is None:
        return "-"
    text = f"{100 * metric.value:.1f}"
    return text + (f" ±{100 * metric.stderr:.1f}" if metric.stderr else "")


def headline_columns(tasks: list[str]) -> list[tuple[str, str, str]]:
    """(column title, task, metric key) for each headline number."""
    cols = []
    for task in tasks:
        if task == MT_BENCH:
            cols.append(("MT-Bench", task, "overall"))
        elif task == "gsm8k":
            cols += [("GSM8K strict %", task, HEADLINE_METRICS[task][0]), ("GSM8K flex %", task, HEADLINE_METRICS[task][1])]
        elif task == "pubmedqa":
            cols.append(("PubMedQA acc %", task, HEADLINE_METRICS[task][0]))
        else:
            cols.append((f"{task} %", task, ""))  # first metric lm-eval reports
    return cols


def format_metrics(task: str, result: TaskResult) -> str:
    parts = []
    for title, _, key in headline_columns([task]):
        metric = result.metrics.get(key) if key else next(iter(result.metrics.values()), None)
        if task == MT_BENCH:
            parts.append(f"{title} {metric.value:.2f}" if metric and metric.value is not None else "")
        else:
            parts.append(f"{title} {_pct(metric)}")
    return ", ".join(p for p in parts if p)


def _short_settings(run: Run) -> str:
    keys = {"LISA": ("gamma", "K"), "LoRA": ("r", "alpha"), "QLoRA": ("r", "alpha")}.get(run.method, ())
    return " ".join(f"{k}={run.settings[k]}" for k in keys if run.settings.get(k) is not None)


def summary_rows(outcomes: list[RunOutcome], tasks: list[str]) -> tuple[list[str], list[list[str]]]:
    cols = headline_columns(tasks)
    header = ["Run", "Method", "Settings"] + [c[0] for c in cols] + ["Trainable", "Train s", "Peak GiB", "Status"]
    rows = []
    for o in outcomes:
        cells = [o.run.name, o.run.method, _short_settings(o.run)]
        for _, task, key in cols:
            result = o.results.get(task)
            metric = None
            if result is not None:
                metric = result.metrics.get(key) if key else next(iter(result.metrics.values()), None)
            if task == MT_BENCH:
                cells.append(f"{metric.value:.2f}" if metric and metric.value is not None else "-")
            else:
                cells.append(_pct(metric))
        t = o.run.training
        cells += [
            f"{t.trainable_params:,}" if t.trainable_params else "-",
            f"{t.runtime_s:.0f}" if t.runtime_s is not None else "-",
            f"{t.peak_memory_gib:.1f}" if t.peak_memory_gib else "-",
            "not evaluated" if not o.run.ok else ("ok" if not o.task_errors else "failed: " + ", ".join(o.task_errors)),
        ]
        rows.append(cells)
    return header, rows


def render_table(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    if markdown:
        line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
        return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _publish_report(comparison: Comparison) -> None:
    """The leaderboard (index.html, leaderboard.md/csv, results.json), from what was just stored.

    A report that cannot be built is a problem to mention, never a reason to lose the results."""
    from eval_harness.report import publish

    s = comparison.settings
    mt_bench_dir = s.mt_bench_dir or (Path(s.data_dir) / MT_BENCH if s.data_dir and (Path(s.data_dir) / MT_BENCH).is_dir() else None)
    try:
        written = publish(s.output, runs_dir=s.runs_dir, mt_bench_dir=mt_bench_dir, baseline=s.pairwise_baseline)
        comparison.say(f"report: {written['html']}")
    except Exception as exc:  # noqa: BLE001 - the evaluation results are already safe on disk
        comparison.problems.append(f"report: {type(exc).__name__}: {exc}")
        comparison.say(f"PROBLEM report not written: {type(exc).__name__}: {exc}")


def compare(settings: CompareSettings, out: TextIO | None = None, log: TextIO | None = None) -> int:
    """Run the comparison; print the summary table on ``out`` (stdout) and progress on ``log``
    (stderr); return the exit status (0: everything evaluated, 1: something was skipped or
    failed, 130: interrupted)."""
    out = out or sys.stdout
    comparison = Comparison(settings, log)
    try:
        status = comparison.run()
    except KeyboardInterrupt:
        comparison.problems.append("interrupted: re-run the same command to resume")
        comparison.write_report(complete=False)
        comparison.say(f"interrupted; finished results are in {settings.output} and a re-run resumes from them")
        status = 130
    header, rows = summary_rows(comparison.outcomes, settings.tasks)
    atomic_write_text(settings.output / "summary.md", render_table(header, rows, markdown=True) + "\n")
    _publish_report(comparison)
    print(render_table(header, rows), file=out)
    if comparison.problems:
        print(f"\n{len(comparison.problems)} problem(s):", file=out)
        for problem in comparison.problems:
            print(f"  - {problem}", file=out)
    print(f"\nresults: {settings.output / 'results.json'}", file=out, flush=True)
    return status
