"""The leaderboard report: ``python -m eval_harness report RUNS_DIR`` and the end of ``compare``.

Rebuilt from stored results only (see :mod:`eval_harness.report.collect`), so re-running it
after another run is evaluated updates every output. Outputs (``--format``):

* ``html``: ``index.html``, self-contained (:mod:`.page`, figures from :mod:`.plots`);
* ``md``: ``leaderboard.md``; ``csv``: ``leaderboard.csv`` (:mod:`.table`);
* ``json``: ``results.json``, compare's record plus ``leaderboard`` and ``statistics``
  (:mod:`.record` is the file's only writer; ``compare`` calls :func:`write_progress`);
* ``summary.md``: the plain table ``compare`` prints (:mod:`.summary`).

Nothing here imports :mod:`eval_harness.compare`: compare calls the report, never the reverse.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from lisa_formats.atomic import write_text_atomic

from eval_harness.report import stats
from eval_harness.report.collect import ReportData, ReportInputError, headline_tests, load_report_data
from eval_harness.report.record import RESULTS_FILE, write_progress, write_results_json
from eval_harness.report.summary import write_summary

FORMATS = ("html", "md", "csv", "json")
FILES = {"html": "index.html", "md": "leaderboard.md", "csv": "leaderboard.csv", "json": RESULTS_FILE}

__all__ = ["FORMATS", "ReportInputError", "parse_formats", "publish", "write_progress", "write_report", "write_summary"]


def parse_formats(text: str) -> list[str]:
    """``"md,html"`` -> ``["md", "html"]``; an unknown name is an error naming the choices."""
    names = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise ValueError(f"--format {text!r}: unknown format {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"expected a comma-separated subset of {','.join(FORMATS)}")
    return list(dict.fromkeys(names))


def _json_record(data: ReportData, generated: str, formats: list[str]) -> dict:
    from eval_harness.report import table

    out = {**data.compare}
    rows = table.records(data)
    out.update(
        report={"generated": generated, "formats": formats, "results_dir": str(data.results_dir),
                "questions_file": data.questions_file, "baseline": data.baseline,
                "bootstrap": {"resamples": data.resamples, "seed": data.seed, "confidence": stats.CONFIDENCE},
                "mt_bench_overall": "mean of all valid turn ratings (as FastChat show_result.py)",
                "delta": "delta_<score>: the run's score minus the baseline's (percentage points; MT-Bench: judge points)",
                "notes": table.notes(data, rows)},
        leaderboard=rows,
        statistics={
            "mt_bench": {r.name: {"ci": asdict(r.mt_bench.ci), "per_category": r.mt_bench.per_category,
                                  "parse_failures": r.mt_bench.parse_failures, "judge_spread": r.mt_bench.judge_spread}
                         for r in data.runs if r.mt_bench},
            "pairs": [t.to_json() for t in data.comparisons],
            "headline": [{"label": label, **t.to_json()} for label, t in headline_tests(data)],
        },
    )
    out.setdefault("problems", data.problems)
    return out


def write_report(data: ReportData, output: Path, formats: list[str] | tuple[str, ...] = FORMATS) -> dict[str, Path]:
    """Write the chosen outputs of ``data`` into ``output``; return {format: path}."""
    from eval_harness.report import page, plots, table

    output = Path(output)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    written = {}
    for fmt in formats:
        path = output / FILES[fmt]
        if fmt == "html":
            write_text_atomic(path, page.render(data, plots.all_plots(data), generated))
        elif fmt == "md":
            write_text_atomic(path, table.markdown(data))
        elif fmt == "csv":
            write_text_atomic(path, table.to_csv(data))
        else:
            write_results_json(output, _json_record(data, generated, list(formats)))
        written[fmt] = path
    return written


def publish(results_dir: Path, output: Path | None = None, formats: list[str] | tuple[str, ...] = FORMATS,
            **options) -> dict[str, Path]:
    """Load the stored results of ``results_dir`` and write the report (into ``results_dir`` by default).

    ``options`` go to :func:`load_report_data` (runs_dir, mt_bench_dir, norms, baseline, resamples, seed).
    """
    data = load_report_data(Path(results_dir), **options)
    return write_report(data, Path(output) if output else Path(results_dir), formats)
