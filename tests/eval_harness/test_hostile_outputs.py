"""Hostile run folders and names against discovery, compare and every output that is not HTML.

Each test failed before issue 18: formula/link/row injection in leaderboard.csv, leaderboard.md
and summary.md, ANSI escapes on the terminal, a FIFO or /dev/zero hanging or exhausting discovery,
reserved run names, a LISA label without LISA's evidence, two compares on one folder, tracebacks
for an unwritable output, a missing adapter base and a token budget beyond the model's context.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import struct
import threading
from pathlib import Path

import pytest

from eval_harness.compare import CompareSettings, Comparison, compare
from eval_harness.discovery import Run, discover_runs, read_run
from eval_harness.report import table, write_summary
from eval_harness.report.collect import load_report_data
from eval_harness.results import OutputLock, RunOutcome
from lisa_formats.history import HISTORY_FILE

FORMULA = "=cmd|' -C calc'!A0"
LINK = "[x](javascript:alert(1))"
ANSI = "\x1b[2J\x1b[31mred"
NEWLINE_ROW = "a\n| fake | row |"
LIVE_LINK = re.compile(r"(?<!\\)\]\(")  # "](" not escaped: a Markdown link


def fake_run(run_dir: Path, config: dict | None = None, card: str | None = None) -> Path:
    """A full-weights run discovery accepts (config.json, a valid safetensors header), no model behind it."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config or {}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    (run_dir / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    if card is not None:
        (run_dir / "README.md").write_text(f"# run\n\naxolotl config\n\n```yaml\n{card}```\n")
    return run_dir


def in_time(seconds: float, call):
    out: list = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return out[0]


def settings(runs: Path, **kw) -> CompareSettings:
    return CompareSettings(runs_dir=runs, **{"output": runs / "report", "tasks": ["mt_bench"], **kw})


def run_compare(s: CompareSettings) -> tuple[int, str]:
    out, log = io.StringIO(), io.StringIO()
    status = compare(s, out=out, log=log)
    return status, out.getvalue() + log.getvalue()


# ---------------------------------------------------------------- injection


@pytest.fixture
def hostile_report(tmp_path, shared_data):
    from tests.eval_harness.report_fixture import write_results

    data = load_report_data(write_results(tmp_path, shared_data)["out"])
    for run, name in zip(data.runs, (FORMULA, LINK, ANSI, NEWLINE_ROW)):
        run.name = name
    data.runs[0].method = "+SUM(A1:A9)"
    data.runs[1].settings = {"gamma": "@evil", "K": "<b>raw</b>"}
    data.runs[1].method = "LISA"
    return data


def test_leaderboard_csv_has_no_formula_cells(hostile_report):
    rows = list(csv.reader(io.StringIO(table.to_csv(hostile_report))))
    cells = [cell for row in rows[1:] for cell in row]
    assert f"'{FORMULA}" in cells and "'+SUM(A1:A9)" in cells
    assert not [c for c in cells if c[:1] in ("=", "+", "@") or (c[:1] == "-" and not _number(c))]


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_leaderboard_md_has_no_live_link_html_or_extra_row(hostile_report):
    md = table.markdown(hostile_report)
    header = md.splitlines()[0]
    table_lines = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table_lines) == 2 + len(hostile_report.runs)  # header, rule, one line per run: no fake row
    assert all(line.count(" | ") == header.count(" | ") for line in table_lines[2:])
    assert not LIVE_LINK.search(md) and "\\[x\\](javascript:alert(1))" in md
    assert "<b>" not in md and "\x1b" not in md


def test_summary_md_and_terminal_are_escaped(tmp_path):
    outcomes = [RunOutcome(Run(name=name, method="Full", model_path="m", adapter_path=None, base_model=None))
                for name in (LINK, ANSI, NEWLINE_ROW, "<img src=x onerror=alert(1)>")]
    terminal = write_summary(tmp_path, outcomes, ["mt_bench"])
    summary = (tmp_path / "summary.md").read_text()
    assert not LIVE_LINK.search(summary) and "<img" not in summary and "\x1b" not in summary
    assert len([line for line in summary.splitlines() if line.startswith("|")]) == 2 + len(outcomes)
    assert "\x1b" not in terminal and len(terminal.splitlines()) == 2 + len(outcomes)
    log = io.StringIO()
    Comparison(settings(tmp_path), log).say(f"run {ANSI}: Full")
    assert "\x1b" not in log.getvalue() and "\\x1b[31mred" in log.getvalue()


# ---------------------------------------------------------------- hostile run folders


def test_a_fifo_readme_does_not_hang_discovery(tmp_path):
    runs = tmp_path / "runs"
    os.mkfifo(fake_run(runs / "weights") / "README.md")
    (runs / "only-fifo").mkdir()
    os.mkfifo(runs / "only-fifo" / "README.md")
    found = in_time(10, lambda: discover_runs(runs))
    assert [r.name for r in found.runs] == ["weights"]
    assert any("README.md: not a regular file (a FIFO)" in w for w in found.runs[0].warnings)
    assert not found.runs[0].ok and "README.md: not a regular file" in found.runs[0].errors[0]  # loaders would block
    assert any("only-fifo" in p for p in found.problems)


def test_debug_log_linked_to_dev_zero_is_not_read(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    (run_dir / "debug.log").symlink_to("/dev/zero")
    run = in_time(10, lambda: read_run(run_dir))
    assert any("debug.log: not a regular file (a character device)" in w for w in run.warnings), run.warnings
    assert any("debug.log: not a regular file" in e for e in run.errors), run.errors


def test_reserved_run_names_are_refused_with_a_message(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs / "Vanilla", card="base_model: /base\n")
    fake_run(runs / "ok", card="base_model: /base\n")
    found = discover_runs(runs)
    assert [r.name for r in found.runs if r.path] == ["ok"]
    assert any("may not be named 'Vanilla'" in p for p in found.problems)

    other = tmp_path / "other"
    fake_run(other / "full")
    fake_run(other / "report")  # the default --output: the report would land inside this run
    before = sorted(p.name for p in (other / "report").iterdir())
    status, said = run_compare(settings(other))
    assert status == 2 and "is an Axolotl run folder" in said, said
    assert sorted(p.name for p in (other / "report").iterdir()) == before


def test_lisa_is_what_the_run_shows_not_what_the_card_says(tmp_path):
    card = "base_model: /base\nlisa:\n  n_layers: 2\n  interval_steps: 5\n"
    no_plugin = read_run(fake_run(tmp_path / "no-plugin", card=card))
    assert no_plugin.method == "Full"
    assert any("no lisa_history.json" in w and "labelled Full" in w for w in no_plugin.warnings)
    ran = fake_run(tmp_path / "ran", card=card)
    (ran / HISTORY_FILE).write_text(json.dumps({
        "format": "lisa_history/1", "settings": {"n_layers": 2, "interval_steps": 5}, "num_layers": 4,
        "layers_path": "model.layers", "layer_params": [1, 1, 1, 1], "always_trainable_params": 1, "switches": []}))
    assert read_run(ran).method == "LISA"
    untold = fake_run(tmp_path / "untold", card="base_model: /base\n")
    (untold / HISTORY_FILE).write_bytes((ran / HISTORY_FILE).read_bytes())
    run = read_run(untold)
    assert run.method == "LISA" and any("labelled LISA" in w for w in run.warnings)


def test_an_adapter_whose_base_is_gone_is_named(tmp_path):
    run_dir = tmp_path / "lora"
    run_dir.mkdir()
    (run_dir / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/gone/base/model"}))
    run = read_run(run_dir)
    assert run.errors and "base model '/gone/base/model' does not exist" in run.errors[0]


# ---------------------------------------------------------------- compare's output folder and budget


def test_a_second_compare_on_one_folder_is_refused(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs / "full")
    lock = OutputLock(runs / "report").acquire()
    try:
        status, said = run_compare(settings(runs))
    finally:
        lock.release()
    assert status == 2 and "is in use by another compare" in said, said


def test_an_unwritable_output_is_a_message(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs / "full")
    (tmp_path / "a-file").write_text("")
    status, said = run_compare(settings(runs, output=tmp_path / "a-file" / "report"))
    assert status == 2 and "cannot write to --output" in said and "Traceback" not in said, said


def test_a_disk_filling_up_mid_run_is_a_message(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    fake_run(runs / "full")

    def full(self, complete=False):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Comparison, "write_report", full)
    status, said = run_compare(settings(runs))
    assert status == 1 and "No space left on device" in said and "re-run resumes" in said, said


def test_max_new_tokens_beyond_the_context_is_refused_up_front(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs / "full", config={"max_position_embeddings": 64})
    status, said = run_compare(settings(runs, max_new_tokens=64, tasks=["gsm8k"]))
    assert status == 2 and "--max-new-tokens 64" in said and "below 64" in said, said
    assert not (runs / "report").exists()
