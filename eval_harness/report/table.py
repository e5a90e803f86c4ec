"""The leaderboard table, once: flat records (CSV, JSON) and the columns shown (Markdown, HTML)."""

from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass
from typing import Any, Callable

from eval_harness.report.collect import NOT_JUDGED, ReportData, RunEntry
from eval_harness.report.summary import render_table

HIGHER, LOWER = "higher", "lower"


@dataclass(frozen=True)
class Column:
    key: str  # the record key whose number sorts the column and picks its best value
    title: str
    better: str | None  # HIGHER, LOWER, or None (not ranked)
    text: Callable[[dict[str, Any]], str]


def _num(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _gain(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return 100 * (value - base) / abs(base)


def _score_key(title: str) -> str:
    return title.lower().replace(" %", "").replace(" ", "_").replace("-", "_")


def record(run: RunEntry, data: ReportData) -> dict[str, Any]:
    """One row as flat numbers (percentages as 0-100), the shape of leaderboard.csv."""
    rec: dict[str, Any] = {"run": run.name, "method": run.method, "settings": run.short_settings}
    mt = run.mt_bench
    rec.update(
        mt_bench_status=run.mt_bench_status,
        mt_bench_turn1=mt.turn1 if mt else None, mt_bench_turn2=mt.turn2 if mt else None,
        mt_bench_overall=mt.overall if mt else None,
        mt_bench_ci_low=mt.ci.low if mt else None, mt_bench_ci_high=mt.ci.high if mt else None,
        judge_spread=mt.judge_spread if mt else None, judge_parse_failures=mt.parse_failures if mt else None,
    )
    for title in (c.title for c in data.columns):
        acc = run.accuracy.get(title)
        key = _score_key(title)
        rec[key] = None if acc is None or acc.value is None else 100 * acc.value
        rec[key + "_stderr"] = None if acc is None or acc.stderr is None else 100 * acc.stderr
        rec[key + "_n"] = acc.n if acc else None
    base = data.run(data.baseline) if data.baseline else None
    if base is not None:
        base_rec = {"mt_bench_overall": base.mt_bench.overall if base.mt_bench else None}
        base_rec.update({_score_key(t): (100 * base.accuracy[t].value if t in base.accuracy and base.accuracy[t].value
                                         is not None else None) for t in (c.title for c in data.columns)})
        for key, base_value in base_rec.items():
            rec[f"gain_{key}_pct"] = _gain(rec.get(key), base_value)
    t = run.training
    rec.update(
        trainable_params=t.trainable_params, total_params=t.total_params, peak_memory_gib=t.peak_memory_gib,
        train_runtime_s=t.runtime_s, train_samples_per_second=t.samples_per_second, train_loss=t.train_loss,
    )
    return rec


def records(data: ReportData) -> list[dict[str, Any]]:
    return [record(run, data) for run in data.runs]


def columns(data: ReportData, rows: list[dict[str, Any]]) -> list[Column]:
    """The columns worth showing: a column nobody has a value for is left out."""
    def has(key: str) -> bool:
        return any(r.get(key) is not None for r in rows)

    cols = [
        Column("run", "Run", None, lambda r: r["run"]),
        Column("method", "Method", None, lambda r: r["method"]),
        Column("settings", "Settings", None, lambda r: r["settings"] or "-"),
    ]
    if has("mt_bench_overall"):
        cols += [
            Column("mt_bench_turn1", "MT-Bench turn 1", HIGHER, lambda r: _num(r["mt_bench_turn1"], 2)),
            Column("mt_bench_turn2", "MT-Bench turn 2", HIGHER, lambda r: _num(r["mt_bench_turn2"], 2)),
            Column("mt_bench_overall", "MT-Bench overall [95% CI]", HIGHER, lambda r: "-" if r["mt_bench_overall"] is None
                   else f"{r['mt_bench_overall']:.2f} [{_num(r['mt_bench_ci_low'], 2)}, {_num(r['mt_bench_ci_high'], 2)}]"),
        ]
        if has("judge_spread"):
            cols.append(Column("judge_spread", "Judge spread (sd)", LOWER, lambda r: _num(r["judge_spread"], 2)))
    elif any(r.get("mt_bench_status") == NOT_JUDGED for r in rows):
        # answers exist but nobody graded them: say so rather than drop the benchmark silently
        cols.append(Column("mt_bench_status", "MT-Bench", None, lambda r: r["mt_bench_status"] or "-"))
    for column in data.columns:
        key, title = _score_key(column.title), column.title
        if has(key):
            cols.append(Column(key, title, HIGHER if column.higher_is_better else LOWER, lambda r, k=key: "-" if r[k] is None
                               else _num(r[k], 1) + (f" ±{r[k + '_stderr']:.1f}" if r[k + "_stderr"] is not None else "")))
    if data.baseline:
        headline = "mt_bench_overall" if has("mt_bench_overall") else next(
            (_score_key(c.title) for c in data.columns if has(_score_key(c.title))), None)
        if headline and has(f"gain_{headline}_pct"):
            label = "MT-Bench" if headline == "mt_bench_overall" else next(c.title for c in data.columns if _score_key(c.title) == headline)
            key = f"gain_{headline}_pct"
            cols.append(Column(key, f"Gain vs {data.baseline} ({label}) %", HIGHER,
                               lambda r, k=key: "-" if r[k] is None else f"{r[k]:+.1f}"))
    if has("mt_bench_overall"):
        cols.append(Column("judge_parse_failures", "Judge parse failures", LOWER, lambda r: _num(r["judge_parse_failures"], 0)))
    optional = [
        ("trainable_params", "Trainable params", LOWER, lambda r: "-" if r["trainable_params"] is None else f"{r['trainable_params']:,}"),
        ("peak_memory_gib", "Peak memory GiB", LOWER, lambda r: _num(r["peak_memory_gib"], 1)),
        ("train_runtime_s", "Train time s", LOWER, lambda r: _num(r["train_runtime_s"], 0)),
        ("train_samples_per_second", "Train samples/s", HIGHER, lambda r: _num(r["train_samples_per_second"], 2)),
    ]
    cols += [Column(k, t, b, f) for k, t, b, f in optional if has(k)]
    return cols


def best_rows(column: Column, rows: list[dict[str, Any]]) -> set[int]:
    """Indexes of the rows holding the column's best value (ties all marked)."""
    if column.better is None:
        return set()
    values = [(i, r.get(column.key)) for i, r in enumerate(rows)]
    values = [(i, v) for i, v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    if len(values) < 2:
        return set()
    target = (max if column.better == HIGHER else min)(v for _, v in values)
    return {i for i, v in values if v == target}


def markdown(data: ReportData) -> str:
    rows = records(data)
    cols = columns(data, rows)
    best = {c.key: best_rows(c, rows) for c in cols}
    # run names and settings are untrusted: Markdown renderers pass raw HTML through
    cell = lambda c, i, r: html.escape("**" + c.text(r) + "**" if i in best[c.key] else c.text(r)).replace("|", "\\|")  # noqa: E731
    body = [[cell(c, i, r) for c in cols] for i, r in enumerate(rows)]
    notes = [
        "",
        "MT-Bench overall is the mean of the turn-1 and turn-2 means (FastChat's score), with a 95% bootstrap "
        f"interval over questions ({data.resamples} resamples, seed {data.seed}). Accuracies are % ± lm-eval's stderr. "
        "**Bold**: best in its column.",
    ]
    if any(r.get("mt_bench_status") == NOT_JUDGED for r in rows):
        notes += ["", "MT-Bench answers were generated but not judged (no --judge-model), so no MT-Bench score is "
                     "reported; the answers are in mt_bench/model_answer/."]
    notes += [f"- {html.escape(line)}" for line in significance_lines(data)]
    return render_table([c.title for c in cols], body, markdown=True) + "\n" + "\n".join(notes) + "\n"


def to_csv(data: ReportData) -> str:
    rows = records(data)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in keys})
    return out.getvalue()


def significance_lines(data: ReportData) -> list[str]:
    """Plain sentences on LISA vs LoRA / Full, one per benchmark."""
    from eval_harness.report.collect import headline_tests

    lines = []
    for label, test in headline_tests(data):
        if test.diff is None:
            lines.append(f"{label} on {test.benchmark}: no items scored for both")
            continue
        unit = "points" if test.benchmark == "MT-Bench" else "pp"
        scale = 1 if test.benchmark == "MT-Bench" else 100
        test = _no_negative_zero(test)
        verdict = "significant at 95%" if test.significant else "not significant at 95%"
        lines.append(
            f"{label} on {test.benchmark}: {scale * test.diff:+.2f} {unit} "
            f"(95% CI [{scale * test.low:+.2f}, {scale * test.high:+.2f}], p={test.p_value:.3f}, n={test.n} paired): {verdict}"
        )
    return lines


def _no_negative_zero(test):
    """Bounds that are exactly 0 print as 0.00, not -0.00."""
    from dataclasses import replace

    fix = lambda x: None if x is None else x + 0.0  # noqa: E731
    return replace(test, diff=fix(test.diff), low=fix(test.low), high=fix(test.high))
