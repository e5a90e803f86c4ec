"""The leaderboard report, built from results written by the test (no model, no judge)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eval_harness.cli import main
from eval_harness.report import plots, stats, table
from eval_harness.report.collect import ReportInputError, load_report_data, sample_answer
from tests.eval_harness.report_fixture import EVIL_RUN, MEMORY, PAYLOAD, RSS_BYTES, TRAINABLE, correct, write_results

SCREENSHOT = Path("/tmp/eval_harness_report.png")


@pytest.fixture(scope="module")
def report(tmp_path_factory, shared_data):
    info = write_results(tmp_path_factory.mktemp("report"), shared_data)
    assert main(["report", str(info["runs_dir"])]) == 0
    return info


def _csv_rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "leaderboard.csv").open() as fh:
        return {row["run"]: row for row in csv.DictReader(fh)}


def test_table_values_equal_the_stored_results(report):
    out, scores = report["out"], report["scores"]
    rows = _csv_rows(out)
    assert list(rows) == ["Vanilla", "full", "lisa", "lora", EVIL_RUN]
    for run, turns in scores.items():
        stored = report["results"][run]["mt_bench"].metrics
        assert float(rows[run]["mt_bench_turn1"]) == pytest.approx(np.nanmean(turns[:, 0]))
        assert float(rows[run]["mt_bench_overall"]) == pytest.approx(stored["overall"].value)
        assert float(rows[run]["gsm8k_strict"]) == pytest.approx(100 * correct(run, 40).mean())
        assert float(rows[run]["gsm8k_flex"]) == pytest.approx(100 * correct(run, 40, "flex").mean())
        assert float(rows[run]["gsm8k_strict_stderr"]) == pytest.approx(
            100 * report["results"][run]["gsm8k"].metrics["exact_match,strict-match"].stderr)
    assert float(rows[EVIL_RUN]["pubmedqa_acc"]) == pytest.approx(30.0) and rows[EVIL_RUN]["mt_bench_overall"] == ""
    assert rows["lora"]["judge_parse_failures"] == "1" and rows["lisa"]["judge_parse_failures"] == "0"
    assert float(rows["lisa"]["judge_spread"]) == pytest.approx(0.1)
    lisa, lora = float(rows["lisa"]["mt_bench_overall"]), float(rows["lora"]["mt_bench_overall"])
    assert float(rows["lisa"]["delta_mt_bench_overall"]) == pytest.approx(lisa - lora)  # judge points, not relative
    assert float(rows["lora"]["delta_mt_bench_overall"]) == 0
    assert float(rows["lisa"]["delta_gsm8k_strict"]) == pytest.approx(15.0)  # percentage points
    for run in ("full", "lisa", "lora"):
        assert int(rows[run]["trainable_params"]) == TRAINABLE[run]
        assert float(rows[run]["peak_memory_gib"]) == MEMORY[run]
        assert rows[run]["peak_memory_kind"] == "gpu_trainer"
        assert float(rows[run]["train_samples_per_second"]) == 3.2
    assert rows["lisa"]["settings"] == "gamma=2 K=5" and rows["Vanilla"]["method"] == "Vanilla"

    md = (out / "leaderboard.md").read_text()
    lines = md.splitlines()
    assert "MT-Bench overall [95% CI]" in lines[0] and "Δ vs lora, MT-Bench overall (points)" in lines[0]
    assert "Gain" not in md and "%) %" not in md
    assert "Peak GPU memory GiB (trainer)" in lines[0] and "Peak memory: peak GPU memory allocated, logged by the trainer" in md
    lisa_line = next(line for line in lines if line.startswith("| lisa "))
    assert f"**{lisa:.2f} [" in lisa_line  # best MT-Bench overall, marked
    assert "the mean of all valid turn ratings" in md and "turn-2 means" not in md
    assert "lisa vs lora on MT-Bench" in md and "<img" not in md  # the payload run name is escaped

    data = json.loads((out / "results.json").read_text())
    assert data["schema_version"] == 2 and data["complete"] is True and len(data["runs"]) == 5
    assert [r["run"] for r in data["leaderboard"]] == list(rows)
    assert data["statistics"]["mt_bench"]["lisa"]["per_category"].keys() == {
        "writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}


def test_significance_lisa_vs_lora_and_full(report):
    data = json.loads((report["out"] / "results.json").read_text())
    headline = {(h["label"], h["benchmark"]): h for h in data["statistics"]["headline"]}
    # +2 on every question except LoRA's unparsable turn: a real gap; vs Full one turn differs: none
    assert headline[("lisa vs lora", "MT-Bench")]["significant"] is True
    assert headline[("lisa vs lora", "MT-Bench")]["low"] > 1.5
    assert headline[("lisa vs full", "MT-Bench")]["significant"] is False
    assert headline[("lisa vs full", "MT-Bench")]["diff"] == pytest.approx(0.5 / 16)
    assert headline[("lisa vs lora", "PubMedQA acc %")]["diff"] == pytest.approx(0.16)
    assert headline[("lisa vs lora", "PubMedQA acc %")]["n"] == 50
    md = (report["out"] / "leaderboard.md").read_text()
    assert "lisa vs lora on MT-Bench: +1.88 points" in md and "lisa vs full on MT-Bench" in md
    assert md.count("not significant at 95%") >= 1 and "-0.00" not in md


def test_bootstrap_ci_equals_a_direct_computation(report):
    data = load_report_data(report["out"], resamples=1000, seed=3)
    lora = data.run("lora").mt_bench
    turns = report["scores"]["lora"]
    # direct: the same index draws, then the overall score of each resample by hand
    idx = np.random.default_rng(3).integers(0, len(turns), size=(1000, len(turns)))
    overall = []
    for row in idx:
        vals = [turns[i, t] for i in row for t in (0, 1) if not np.isnan(turns[i, t])]
        overall.append(sum(vals) / len(vals))  # FastChat show_result: the mean of all valid turn ratings
    assert (lora.ci.low, lora.ci.high) == pytest.approx(tuple(np.percentile(overall, [2.5, 97.5])))
    assert lora.ci.resamples == 1000
    # closed-form sanity: constant scores have a zero-width interval; wide samples follow the normal approximation
    assert stats.bootstrap_mt_bench(np.full(30, 6.0), np.full(30, 4.0)) == stats.Interval(5.0, 5.0, 2000, 0)
    rng = np.random.default_rng(11)
    t1, t2 = rng.normal(6, 2, 400), rng.normal(5, 2, 400)
    ci = stats.bootstrap_mt_bench(t1, t2, resamples=4000, seed=1)
    half_width = 1.96 * np.std((t1 + t2) / 2, ddof=1) / np.sqrt(400)
    assert (ci.high - ci.low) / 2 == pytest.approx(half_width, rel=0.1)
    assert ci.low < (t1.mean() + t2.mean()) / 2 < ci.high


def test_report_cli_formats_and_errors(report, tmp_path, capsys):
    only_md = tmp_path / "md-only"
    assert main(["report", str(report["runs_dir"]), "--format", "md", "--output", str(only_md)]) == 0
    assert sorted(p.name for p in only_md.iterdir()) == ["leaderboard.md"]
    with pytest.raises(SystemExit) as exc:
        main(["report", str(report["runs_dir"]), "--format", "md,pdf"])
    assert exc.value.code == 2 and "unknown format 'pdf'" in capsys.readouterr().err
    empty = tmp_path / "empty-runs"
    (empty / "report" / "results" / "ghost").mkdir(parents=True)
    assert main(["report", str(empty)]) == 1
    err = capsys.readouterr().err
    assert "no run has a stored result" in err and str(empty / "report" / "results") in err
    broken = tmp_path / "broken"
    shutil.copytree(report["out"], broken)
    (broken / "results.json").write_text("{not json")
    with pytest.raises(ReportInputError, match=r"broken/results.json: not valid JSON"):
        load_report_data(broken)
    with pytest.raises(ReportInputError, match="--baseline: Unknown run 'nope'"):
        load_report_data(report["out"], baseline="nope")
    assert main(["report", str(report["runs_dir"]), "--baseline", "lroa", "--output", str(tmp_path / "typo")]) == 1
    err = capsys.readouterr().err
    assert "--baseline: Unknown run 'lroa'. Did you mean 'lora'?" in err and "Available: " in err
    assert not (tmp_path / "typo").exists()


@pytest.fixture(scope="module")
def browser_page(report):
    if not shutil.which("chromium"):
        pytest.fail("chromium is not installed: `apt-get install -y chromium` (the README's test line does it)")
    from tests.eval_harness.chromium import Browser

    browser = Browser()
    try:
        browser.load(report["out"] / "index.html")
        page = {
            "problems": browser.problems(),
            "title": browser.evaluate("document.title"),
            "xss": browser.evaluate("window.__xss === undefined ? null : String(window.__xss)"),
            "rows": browser.evaluate("Array.from(document.querySelectorAll('#leaderboard tbody tr'))"
                                     ".map(r => r.cells[0].textContent)"),
            "plots": browser.evaluate("Array.from(document.querySelectorAll('figure.plot'))"
                                      ".map(f => [f.id, f.querySelector('img').complete, f.querySelector('img').naturalWidth])"),
            "images": browser.evaluate("Array.from(document.images).map(i => i.getAttribute('src').slice(0, 26))"),
            "scripts": browser.evaluate("document.scripts.length"),
            "text": browser.evaluate("document.body.textContent"),  # closed <details> too
            "best": browser.evaluate("Array.from(document.querySelectorAll('#leaderboard td.best'))"
                                     ".map(td => td.parentElement.cells[0].textContent + ':' + td.cellIndex)"),
        }
        overall_col = browser.evaluate("Array.from(document.querySelectorAll('#leaderboard th'))"
                                       ".findIndex(th => th.textContent.startsWith('MT-Bench overall'))")
        browser.evaluate(f"document.querySelectorAll('#leaderboard th')[{overall_col}].click()")
        page["sorted_asc"] = browser.evaluate("Array.from(document.querySelectorAll('#leaderboard tbody tr'))"
                                              ".map(r => r.cells[0].textContent)")
        page["screenshot"] = browser.screenshot(SCREENSHOT)
        page["overall_col"] = overall_col
        page["problems_after"] = browser.problems()
    finally:
        browser.close()
    return page


@pytest.mark.browser
def test_html_renders_in_chromium(browser_page):
    page = browser_page
    assert page["problems"] == [] and page["problems_after"] == []
    assert page["title"].startswith("Leaderboard")
    png = page["screenshot"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 50_000
    assert page["rows"] == ["Vanilla", "full", "lisa", "lora", EVIL_RUN]
    plots = {p[0]: p for p in page["plots"]}
    assert set(plots) == {"plot-mt_bench_radar", "plot-mt_bench_bars", "plot-loss_curves", "plot-pareto",
                          "plot-lisa_layers_lisa", "plot-weight_norms"}
    assert all(complete and width > 100 for _, complete, width in plots.values()), plots
    assert all(src == "data:image/svg+xml;base64," for src in page["images"])  # self-contained: nothing fetched
    assert f"lisa:{page['overall_col']}" in page["best"]
    # ascending by MT-Bench overall; the run without a score goes last
    assert page["sorted_asc"] == ["Vanilla", "lora", "full", "lisa", EVIL_RUN]
    for heading in ("Is the gap real?", "How these numbers were produced", "lisa vs lora on MT-Bench"):
        assert heading in page["text"]


@pytest.mark.browser
def test_untrusted_text_is_inert_and_shown_as_text(browser_page, report):
    page = browser_page
    assert page["xss"] is None and page["title"] != "pwned"
    assert page["scripts"] == 1  # the sort script only
    assert len(page["images"]) == 6  # the plots only: no <img src=x>
    html_text = (report["out"] / "index.html").read_text()
    assert PAYLOAD not in html_text and EVIL_RUN not in html_text
    assert "&lt;script&gt;window.__xss=&#x27;script&#x27;&lt;/script&gt;" in html_text
    text = page["text"]
    assert PAYLOAD in text  # the answer and the verdict, shown as the characters they are
    assert text.count(PAYLOAD) >= 3  # answer, judge verdict, the run's "note" setting
    assert EVIL_RUN in text


LEADERBOARD_OPTIONS = {"--format", "--baseline", "--resamples", "--seed", "--norms"}  # compare and report alike
REPORT_OPTIONS = {"--output", "--results", "--mt-bench-dir", *LEADERBOARD_OPTIONS}
COMPARE_OPTIONS = {
    "--output", "--tasks", "--limit", "--judge-model", "--judge-base-url", "--judge-repeats", "--judge-concurrency",
    "--pairwise-baseline", "--reference", "--rejudge-failed", "--judge-constrain-verdict", "--data-dir", "--mt-bench-dir", "--gsm8k-fewshot", "--pubmedqa-fewshot", "--fewshot",
    "--batch-size", "--dtype", "--device", "--max-new-tokens", "--template", "--method", "--set", "--base-model",
    "--variant", "--apply-chat-template", "--fewshot-as-multiturn", *LEADERBOARD_OPTIONS,
    "--backend", "--server-url", "--server-model", "--engine-python", "--engine-command", "--engine-concurrency",
    "--engine-timeout", "--engine-max-model-len", "--threads", "--judge-engine-model",
}


def _subparser_options(command: str) -> set[str]:
    from eval_harness.cli import build_parser

    sub = next(a for a in build_parser()._subparsers._group_actions).choices[command]
    return {s for action in sub._actions for s in action.option_strings if s.startswith("--") and s != "--help"}


@pytest.mark.parametrize("command, expected", [("report", REPORT_OPTIONS), ("compare", COMPARE_OPTIONS)])
def test_help_lists_every_option(command, expected):
    """Every option the parser accepts is in ``--help``, and the parser accepts the documented ones."""
    assert _subparser_options(command) == expected
    proc = subprocess.run([sys.executable, "-m", "eval_harness", command, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    missing = sorted(option for option in expected if option not in proc.stdout.split())
    assert not missing, f"`{command} --help` does not list {missing}"


def test_report_help_lists_its_options():
    proc = subprocess.run([sys.executable, "-m", "eval_harness", "report", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    listed = {word.strip("[],") for word in proc.stdout.split() if word.startswith(("--", "[--"))}
    assert REPORT_OPTIONS <= listed, f"missing from `report --help`: {sorted(REPORT_OPTIONS - listed)}"


# --------------------------------------------------------------------------- what the table may claim


def _md_column(md: str, title_start: str) -> dict[str, str]:
    """run -> cell of the Markdown leaderboard's column whose title starts with ``title_start``."""
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in md.splitlines() if line.startswith("| ")]
    col = next(i for i, title in enumerate(rows[0]) if title.startswith(title_start))
    return {row[0]: row[col] for row in rows[1:]}


def test_no_star_where_nothing_differs_nor_for_the_baseline():
    score = table.Column("x", "X", table.HIGHER, lambda r: str(r["x"]))
    assert table.best_rows(score, [{"x": 35.0}] * 4) == set()  # PubMedQA 35.0 for everyone: nobody is best
    assert table.best_rows(score, [{"x": 35.0}, {"x": 40.0}, {"x": None}, {"x": 40.0}]) == {1, 3}
    delta = table.Column("d", "D", table.HIGHER, lambda r: str(r["d"]), star_beyond=0.0)
    assert table.best_rows(delta, [{"d": 0.0}, {"d": -3.0}, {"d": -1.0}]) == set()  # the baseline is best: no star
    assert table.best_rows(delta, [{"d": 0.0}, {"d": 0.0}]) == set()
    assert table.best_rows(delta, [{"d": 0.0}, {"d": 2.0}, {"d": -1.0}]) == {1}


def test_ties_are_judged_as_the_table_shows_them():
    rounded = lambda r: "-" if r["x"] is None else f"{r['x']:.0f} GiB"  # noqa: E731
    memory = table.Column("x", "Peak", table.LOWER, rounded)
    assert table.best_rows(memory, [{"x": 10.26}, {"x": 10.4}]) == set()  # both read "10": no winner shown
    assert table.best_rows(memory, [{"x": 10.2}, {"x": 13.0}, {"x": None}]) == {0}
    assert table.best_rows(memory, [{"x": 10.2}, {"x": 10.4}, {"x": 13.0}]) == {0, 1}  # equal as shown


def test_delta_column_is_in_points_and_stars_only_a_gain(report):
    md = (report["out"] / "leaderboard.md").read_text()
    delta = _md_column(md, "Δ vs lora")
    assert delta["lora"] == "baseline" and delta["Vanilla"] == "-1.0"
    assert delta["lisa"] == "**+2.0**"  # the largest gain over the baseline
    # against the best run every other run loses: no star anywhere in the column
    data = load_report_data(report["out"], baseline="lisa")
    delta = _md_column(table.markdown(data), "Δ vs lisa")
    assert delta["lisa"] == "baseline" and not any("**" in cell for cell in delta.values()), delta
    # every row with the same score: no star in that column
    for run in data.runs:
        if "PubMedQA acc %" in run.accuracy:
            run.accuracy["PubMedQA acc %"].value = 0.35
    pubmedqa = _md_column(table.markdown(data), "PubMedQA acc %")
    assert len(pubmedqa) == 5 and all(cell.startswith("35.0 ±") for cell in pubmedqa.values()), pubmedqa
    rows = table.records(data)
    column = next(c for c in table.columns(data, rows) if c.title == "PubMedQA acc %")
    assert table.best_rows(column, rows) == set()  # the page stars exactly these rows


def test_constant_answers_are_named(report):
    notes = json.loads((report["out"] / "results.json").read_text())["report"]["notes"]
    constant = [n for n in notes if "gave one answer" in n]
    assert constant == ["Vanilla gave one answer ('yes') to all 50 items of PubMedQA acc: a score there is only how "
                        "often that answer is right, not evidence that the questions were read."]
    assert constant[0] in (report["out"] / "leaderboard.md").read_text()
    assert "Vanilla gave one answer (&#x27;yes&#x27;) to all 50 items of PubMedQA acc" in (
        report["out"] / "index.html").read_text()
    data = load_report_data(report["out"])  # several runs with the same constant answer: one sentence names them all
    for run in data.runs:
        if run.name in ("full", "lora"):
            pubmedqa = run.accuracy["PubMedQA acc %"]
            pubmedqa.answers = dict.fromkeys(pubmedqa.answers, "yes")
    assert [n for n in table.notes(data, table.records(data)) if "gave one answer" in n] == [
        "Vanilla, full and lora gave one answer ('yes') to all 50 items of PubMedQA acc: a score there is only how "
        "often that answer is right, not evidence that the questions were read."]


def test_sample_answer_reads_lm_eval_records():
    choices = [["ctx", " yes"], ["ctx", " no"], ["ctx", " maybe"]]
    assert sample_answer({"arguments": choices, "filtered_resps": [[-9.0, False], [-2.5, True], [-4.0, False]]}) == "no"
    assert sample_answer({"filtered_resps": [" 42 "]}) == "42"
    assert sample_answer({"filtered_resps": [[-1.0, True]]}) is None  # one continuation: not a choice
    assert sample_answer({}) is None


@pytest.mark.parametrize("memory", ["rss", "mixed"])
def test_peak_memory_says_what_it_measured(tmp_path, shared_data, memory):
    info = write_results(tmp_path, shared_data, memory=memory)
    assert main(["report", str(info["runs_dir"]), "--format", "md,csv,html"]) == 0
    rows = _csv_rows(info["out"])
    md = (info["out"] / "leaderboard.md").read_text()
    html_text = (info["out"] / "index.html").read_text()
    rss = {run: f"{RSS_BYTES[run] / 2**30:.2f}" for run in ("full", "lisa", "lora")}
    if memory == "rss":  # the trainer logged zeros (CPU): the training process's peak RSS is shown, and said to be
        assert {run: rows[run]["peak_memory_kind"] for run in rss} == dict.fromkeys(rss, "rss_process")
        assert {run: float(rows[run]["peak_memory_gib"]) for run in rss} == {r: RSS_BYTES[r] / 2**30 for r in rss}
        cells = _md_column(md, "Peak RSS GiB (training process)")
        assert cells["lora"] == f"**{rss['lora']}**" and cells["full"] == rss["full"]
        assert "Peak memory: peak RSS of the training process (measured by lisa-plugin train)." in md
        assert "Quality vs peak memory" in html_text
    else:  # two kinds: each cell says which, and none is called best
        cells = _md_column(md, "Peak memory GiB (kind per row)")
        assert cells["full"] == f"{MEMORY['full']:.2f} (GPU, trainer)" and cells["lisa"] == f"{rss['lisa']} (RSS, process)"
        assert not any("**" in cell for cell in cells.values()), cells
        assert "Peak memory is not the same measurement in every row" in md
        assert "Quality vs trainable parameters" in html_text and "not one kind of measurement" in html_text


def test_pareto_frontier_is_named_only_when_drawn(report, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_render", lambda fig: figures.append(fig) or "<svg/>")
    data = load_report_data(report["out"])

    def legend_and_caption():
        plot = plots.pareto(data)
        return [t.get_text() for t in figures[-1].axes[0].get_legend().get_texts()], plot.caption

    legend, caption = legend_and_caption()
    assert "Pareto frontier" in legend and "dashed line" in caption
    for run in data.runs:  # one run with a cost: one point, which is no frontier
        if run.name != "lisa":
            run.training.peak_memory_gib = run.training.trainable_params = None
    legend, caption = legend_and_caption()
    assert legend == ["lisa (LISA)"] and "dashed" not in caption
    assert plots.pareto_frontier([(1.0, 5.0), (2.0, 4.0), (3.0, 7.0), (3.0, 6.0)]) == [(1.0, 5.0), (3.0, 7.0)]


def test_demo_page_says_what_the_demo_can_show(report, tmp_path, shared_data):
    sentence = "This page comes from the demo: a tiny model trained for minutes on templated data and scored on 40 items"
    own = (report["out"] / "index.html").read_text()
    assert "comes from the demo" not in own and "comes from the demo" not in (report["out"] / "leaderboard.md").read_text()
    info = write_results(tmp_path, shared_data, settings={"origin": "demo", "limit": 40})
    assert main(["report", str(info["runs_dir"]), "--format", "md,html"]) == 0
    html_text, md = (info["out"] / "index.html").read_text(), (info["out"] / "leaderboard.md").read_text()
    assert sentence in md and "cannot show how LISA" in md
    assert f'<p class="demo" id="demo-note">{sentence}' in html_text and "cannot show how LISA" in html_text
