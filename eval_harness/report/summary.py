"""The headline numbers of each benchmark, and the plain-text summary ``compare`` prints and saves.

Which numbers a benchmark shows, and which way is better, come from its registry record
(:mod:`eval_harness.benchmarks`); nothing here names a benchmark.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from lisa_formats.atomic import write_text_atomic
from lisa_formats.escape import markdown_text, printable

from eval_harness.benchmarks import benchmark_for
from eval_harness.discovery import REFERENCE_METHOD, short_settings
from eval_harness.results import Metric, RunOutcome, TaskResult

SUMMARY_FILE = "summary.md"


class HeadlineColumn(NamedTuple):
    title: str  # e.g. "GSM8K strict %"
    task: str
    metric: str  # lm-eval's "metric,filter"; "" = the first metric the task reports
    higher_is_better: bool = True
    percent: bool = True


def headline_columns(tasks: list[str]) -> list[HeadlineColumn]:
    """One column per headline number of each task, in task order."""
    return [
        HeadlineColumn(h.title, task, h.metric, h.higher_is_better, h.percent)
        for task in tasks
        for h in benchmark_for(task).headlines
    ]


def pick_metric(result: TaskResult | None, metric: str) -> Metric | None:
    if result is None:
        return None
    return result.metrics.get(metric) if metric else next(iter(result.metrics.values()), None)


def format_value(column: HeadlineColumn, metric: Metric | None) -> str:
    if metric is None or metric.value is None:
        return "-"
    if not column.percent:
        return f"{metric.value:.2f}"
    return f"{100 * metric.value:.1f}" + (f" ±{100 * metric.stderr:.1f}" if metric.stderr else "")


def format_metrics(task: str, result: TaskResult) -> str:
    """``"GSM8K strict % 40.0 ±4.9, GSM8K flex % 45.0"`` for a progress line ("" when nothing was scored)."""
    parts = []
    for column in headline_columns([task]):
        metric = pick_metric(result, column.metric)
        if metric is not None and metric.value is not None or column.percent:
            parts.append(f"{column.title} {format_value(column, metric)}")
    return ", ".join(parts)


def summary_rows(outcomes: list[RunOutcome], tasks: list[str]) -> tuple[list[str], list[list[str]]]:
    cols = headline_columns(tasks)
    header = ["Run", "Method", "Settings"] + [c.title for c in cols] + ["Trainable", "Train s", "Peak GiB", "Status"]
    rows = []
    for o in outcomes:
        cells = [o.run.name, o.run.method, short_settings(o.run.method, o.run.settings)]
        cells += [format_value(c, pick_metric(o.results.get(c.task), c.metric)) for c in cols]
        t = o.run.training
        rss = " RSS" if t.peak_memory_kind == "rss_process" else ""  # not the trainer's GPU figure: say so
        cells += [
            f"{t.trainable_params:,}" if t.trainable_params else "-",
            f"{t.runtime_s:.0f}" if t.runtime_s is not None else "-",
            f"{t.peak_memory_gib:.2f}{rss}" if t.peak_memory_gib else "-",
            _status(o),
        ]
        rows.append(cells)
    return header, rows


def _status(outcome: RunOutcome) -> str:
    if not outcome.run.ok:
        return "not evaluated"
    if outcome.task_errors:
        return "failed: " + ", ".join(outcome.task_errors)
    return "reference answers: MT-Bench only" if outcome.run.method == REFERENCE_METHOD else "ok"


def render_table(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    if markdown:
        line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
        return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def write_summary(output: Path, outcomes: list[RunOutcome], tasks: list[str]) -> str:
    """Write ``summary.md`` into ``output``; return the same table as plain text (for the terminal).

    Cells hold run names and settings from the runs folder: Markdown gets them literal (no link,
    HTML, pipe or line break), the terminal gets control characters (ANSI escapes) shown, not obeyed."""
    header, rows = summary_rows(outcomes, tasks)
    as_markdown = [[markdown_text(cell) for cell in row] for row in rows]
    write_text_atomic(Path(output) / SUMMARY_FILE, render_table(header, as_markdown, markdown=True) + "\n")
    return render_table(header, [[printable(cell) for cell in row] for row in rows])
