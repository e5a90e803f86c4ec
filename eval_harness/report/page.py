"""``index.html``: one self-contained page (inline CSS, figures as data: SVG, a small sort script).

Every piece of text that comes from a run (names, settings, answers, judge verdicts, file
paths) goes through :func:`html.escape` in :func:`_e`, the only way text enters the page. A
Content-Security-Policy that admits only the sort script (by hash) and data: images is a
second wall: even a missed escape could not run a script or load anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
from datetime import datetime, timezone
from typing import Any

from eval_harness.discovery import REFERENCE_METHOD
from eval_harness.report import table
from eval_harness.report.collect import ReportData, RunEntry
from eval_harness.report.plots import Plot

EXCERPT_CHARS = 1500

SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var asc = th.dataset.dir !== "asc";
    th.closest("tr").querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = asc ? "asc" : "desc";
    function key(td) {
      if (td.dataset.v === undefined) return td.textContent.toLowerCase();
      return td.dataset.v === "" ? null : parseFloat(td.dataset.v);
    }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null) return y === null ? 0 : 1;
      if (y === null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
table.sortable th{cursor:pointer;background:#f3f3f3;user-select:none}
table.sortable th[data-dir=asc]::after{content:" \\25B2"}table.sortable th[data-dir=desc]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.best{font-weight:bold;background:#e6f4e6}
.demo{background:#eef4fb;border:1px solid #9bbbe0;padding:.5em 1em}
.sig{color:#075}.nosig{color:#955}.problems{background:#fff4e5;border:1px solid #f0c36d;padding:.5em 1em}
figure{display:inline-block;margin:1em 1em 1em 0;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:12px;color:#555;max-width:40em}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f7f7;padding:.5em;max-height:20em;overflow:auto}
details{margin:.4em 0}summary{cursor:pointer}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}
dt{font-weight:bold}dd{margin:0}
"""


def _e(value: Any) -> str:
    """Any value as HTML text: the one door into the page."""
    return html.escape("" if value is None else str(value), quote=True)


def _script_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


def _leaderboard(data: ReportData) -> str:
    rows = table.records(data)
    cols = table.columns(data, rows)
    best = {c.key: table.best_rows(c, rows) for c in cols}
    head = "".join(f'<th scope="col" title="click to sort">{_e(c.title)}</th>' for c in cols)
    body = []
    for i, r in enumerate(rows):
        cells = []
        for c in cols:
            value = r.get(c.key)
            if c.better is None:
                cells.append(f"<td>{_e(c.text(r))}</td>")
                continue
            cls = "num best" if i in best[c.key] else "num"
            mark = ' <span title="best in column">★</span>' if i in best[c.key] else ""
            cells.append(f'<td class="{cls}" data-v="{_e("" if value is None else value)}">{_e(c.text(r))}{mark}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table id="leaderboard" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _table_notes(data: ReportData) -> str:
    """What the columns measure (memory kind, Δ) and which models gave one answer to everything."""
    lines = table.notes(data, table.records(data), demo=False)
    return '<ul id="table-notes">' + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul>" if lines else ""


def _significance(data: ReportData) -> str:
    lines = table.significance_lines(data)
    out = ["<h2>Is the gap real?</h2>",
           f"<p>Paired bootstrap ({data.resamples} resamples, seed {data.seed}): MT-Bench over questions "
           "(a question's score is the mean of its rated turns), GSM8K/PubMedQA over items from lm-eval's "
           "per-sample logs. A difference is significant at 95% when its interval excludes 0.</p>"]
    if lines:
        out.append('<ul id="significance">' + "".join(
            f'<li class="{"nosig" if "not significant" in line else "sig"}">{_e(line)}</li>' for line in lines) + "</ul>")
    else:
        out.append('<p id="significance">No LISA run with a LoRA or Full run to compare it with.</p>')
    if data.comparisons:
        rows = []
        for t in data.comparisons:
            scale = 1 if t.benchmark == "MT-Bench" else 100
            fmt = lambda x: "-" if x is None else f"{scale * x:+.2f}"  # noqa: E731
            rows.append(
                f"<tr><td>{_e(t.benchmark)}</td><td>{_e(t.a)}</td><td>{_e(t.b)}</td><td class=num>{t.n}</td>"
                f"<td class=num>{fmt(t.diff)}</td><td class=num>[{fmt(t.low)}, {fmt(t.high)}]</td>"
                f"<td class=num>{'-' if t.p_value is None else f'{t.p_value:.3f}'}</td>"
                f"<td>{'yes' if t.significant else 'no'}</td></tr>")
        out.append("<details><summary>All pairs</summary><table id=\"pairs\" class=\"sortable\"><thead><tr>"
                   "<th>Benchmark</th><th>A</th><th>B</th><th>n</th><th>A − B</th><th>95% CI</th><th>p</th>"
                   "<th>Significant</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
                   "<p>MT-Bench differences in judge points, accuracies in percentage points.</p></details>")
    return "\n".join(out)


def _plots(plots: list[Plot]) -> str:
    out = ['<h2>Plots</h2><div id="plots">']
    for plot in plots:
        data_uri = "data:image/svg+xml;base64," + base64.b64encode(plot.svg.encode()).decode()
        out.append(f'<figure class="plot" id="plot-{_e(plot.key)}"><figcaption><b>{_e(plot.title)}</b></figcaption>'
                   f'<img src="{data_uri}" alt="{_e(plot.title)}"><figcaption>{_e(plot.caption)}</figcaption></figure>')
    out.append("</div>")
    return "\n".join(out)


def _excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + f"… ({len(text) - EXCERPT_CHARS} more characters)"


def _run_details(run: RunEntry) -> str:
    t = run.training
    items = [("Method", run.method), ("Run dir", run.path or "-")]
    items += [(k, v) for k, v in run.settings.items()]
    items += [("Training logs", ", ".join(t.sources) or "none found"), ("Train loss", t.train_loss),
              ("Total params", f"{t.total_params:,}" if t.total_params else "-")]
    if run.mt_bench:
        items += [("MT-Bench judge", run.mt_bench.judge or run.mt_bench.judge_model),
                  ("Judgments", run.mt_bench.n_judgments),
                  ("Judge repeats", run.mt_bench.repeats)]
    out = [f'<details class="run"><summary>{_e(run.name)} ({_e(run.method)})</summary><dl>']
    out += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items]
    out.append("</dl>")
    if run.problems:
        out.append('<ul class="problems">' + "".join(f"<li>{_e(p)}</li>" for p in run.problems) + "</ul>")
    if run.mt_bench and run.mt_bench.examples:
        out.append("<h4>MT-Bench: unparsable verdicts and lowest-rated answers</h4>")
        for ex in run.mt_bench.examples:
            score = "parse failure" if ex.score < 0 else f"{ex.score:g}/10"
            out.append(
                f'<div class="example"><p><b>Question {ex.question_id}</b> ({_e(ex.category)}), turn {ex.turn}: {score}</p>'
                f"<p>Question:</p><pre>{_e(_excerpt(ex.question))}</pre>"
                f'<p>Answer:</p><pre class="answer">{_e(_excerpt(ex.answer))}</pre>'
                f'<p>Judge:</p><pre class="judgment">{_e(_excerpt(ex.judgment))}</pre></div>')
    out.append("</details>")
    return "\n".join(out)


def generation_backends(compare: dict[str, Any]) -> str:
    """Which backend generated the stored results (``settings.generation`` of each): e.g. "server: vllm 0.32.0"."""
    seen: dict[str, list[str]] = {}
    for run in compare.get("runs") or []:
        for task, result in (run.get("results") or {}).items():
            generation = (result.get("settings") or {}).get("generation")
            if isinstance(generation, dict):
                label = " ".join(str(generation[k]) for k in ("engine", "version") if generation.get(k))
                label = f"{generation.get('backend')}: {label}" + (f" at {generation['url']}" if generation.get("url") else "")
                seen.setdefault(label, []).append(f"{run.get('name')}/{task}")
    if len(seen) > 1:
        return "; ".join(f"{label} ({', '.join(where)})" for label, where in sorted(seen.items()))
    return next(iter(seen), "hf (recorded before backends were)")


def _provenance(data: ReportData, generated: str) -> str:
    s = data.compare.get("settings") or {}
    judges = sorted({r.mt_bench.judge or r.mt_bench.judge_model for r in data.runs
                     if r.mt_bench and r.mt_bench.judge_model})
    versions = sorted({a.lm_eval_version for r in data.runs for a in r.accuracy.values() if a.lm_eval_version})
    fewshot = sorted({f"{a.task}: {a.num_fewshot}-shot" for r in data.runs for a in r.accuracy.values()
                      if a.num_fewshot is not None})
    subsets = sorted({f"{task}: {r['details']['subset']['description']}" for run in data.compare.get("runs") or []
                      for task, r in (run.get("results") or {}).items() if (r.get("details") or {}).get("subset")})
    variants = ", ".join(f"{k}={v}" for k, v in (s.get("variants") or {}).items())
    items = [
        ("Base model", data.compare.get("base_model")),
        ("Base model weights", table.weights_source(data.compare.get("base_model_source"))),
        ("Generation backend", generation_backends(data.compare)),
        ("MT-Bench judge", ", ".join(judges) or "not judged"),
        ("Reference rows", "; ".join(f"{r.name}: {r.settings.get('answers')}" for r in data.runs
                                     if r.method == REFERENCE_METHOD) or "none (every row is a run of this harness)"),
        ("Judge repeats", s.get("judge_repeats")),
        ("MT-Bench questions", data.questions_file or "categories from the stored per-question summary"),
        ("lm-eval", ", ".join(versions) or "-"),
        ("Few-shot", ", ".join(fewshot) or "-"),
        ("Limit per benchmark", "; ".join(subsets) or s.get("limit") or "none (full benchmarks)"),
        ("lm-eval settings", f"variants: {variants or 'stock (lm-eval’s own tasks)'}; max new tokens: "
         f"{s.get('max_new_tokens') or 'each task’s own'}; chat template: {s.get('apply_chat_template') or 'no'}"
         f"{' (few-shot as turns)' if s.get('fewshot_as_multiturn') else ''}"),
        ("Results updated", data.compare.get("updated")),
        ("Report generated", generated),
        ("Stored results", data.results_dir),
        ("Bootstrap", f"{data.resamples} resamples, seed {data.seed}, 95% percentile intervals"),
        ("Δ vs baseline", f"score − {data.baseline}'s score, in percentage points (MT-Bench: judge points)"
         if data.baseline else "no baseline: no LoRA run and no --baseline"),
        ("MT-Bench overall", "FastChat's score (show_result.py): the mean of all valid turn ratings; unparsable verdicts are left out"),
    ]
    return ('<h2>How these numbers were produced</h2><dl id="provenance">'
            + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v if v is not None else '-')}</dd>" for k, v in items) + "</dl>")


def render(data: ReportData, plots: list[Plot], generated: str | None = None) -> str:
    generated = generated or datetime.now(timezone.utc).isoformat(timespec="seconds")
    csp = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src '{_script_hash(SORT_SCRIPT)}'; "
           "base-uri 'none'; form-action 'none'")
    problems = data.problems + [p for r in data.runs for p in r.problems]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        "<title>Leaderboard: LISA vs LoRA vs full fine-tuning</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Leaderboard: LISA vs LoRA vs full fine-tuning</h1>",
        f"<p>{len(data.runs)} rows, from {_e(data.results_dir)}; generated {_e(generated)}. "
        "Click a column title to sort; ★ marks the best value of a column (none where every row has the same value).</p>",
    ]
    demo = table.demo_note(data)
    if demo:
        parts.append(f'<p class="demo" id="demo-note">{_e(demo)}</p>')
    if problems:
        parts.append('<div class="problems"><b>Problems</b><ul>' + "".join(f"<li>{_e(p)}</li>" for p in problems)
                     + "</ul></div>")
    parts += [
        "<h2>Leaderboard</h2>", _leaderboard(data),
        "<p>MT-Bench overall = FastChat's score, the mean of all valid turn ratings, with a 95% bootstrap interval over questions. "
        "GSM8K and PubMedQA: accuracy in % ± lm-eval's standard error.</p>",
        _table_notes(data),
        _significance(data), _plots(plots),
        "<h2>Runs</h2>", "\n".join(_run_details(r) for r in data.runs),
        _provenance(data, generated),
        f"<script>{SORT_SCRIPT}</script>", "</body></html>",
    ]
    return "\n".join(parts) + "\n"
