"""`run_measured`, behind `lisa-plugin train` and the demos: peak RSS, wall time, exit status, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from lisa_formats.resources import RESOURCES_FILE, read_resources
from lisa_plugin.tools.axolotl_runner import config_output_dir, run_measured

MiB = 2**20


def test_peak_rss_of_a_child_that_holds_200_mb(tmp_path):
    # a large parent (the demo, a test runner) must not lend the child its own high-water mark
    ballast = b"z" * (400 * MiB)
    # bytes * n writes every byte, so the pages are resident, not just reserved
    child = [sys.executable, "-c", f"import time; block = b'x' * {200 * MiB}; time.sleep(0.2); raise SystemExit(3)"]
    lines = []
    (tmp_path / "run").mkdir()  # as a training run makes its output_dir: a failed run is recorded there too
    code = run_measured(child, output_dir=tmp_path / "run", on_line=lines.append)
    assert code == 3  # passed through
    record = read_resources(tmp_path / "run")
    assert record.exit_code == 3 and record.command == child and record.peak_gpu_bytes is None
    assert 200 * MiB <= record.peak_rss_bytes < 200 * MiB + 150 * MiB, record.peak_rss_bytes / MiB
    assert 0.2 <= record.wall_s < 60
    assert run_measured([sys.executable, "-c", "raise SystemExit(1)"], output_dir=tmp_path / "never") == 1
    assert not (tmp_path / "never").exists()  # a failed run that made no output_dir gets none made for it
    small = run_measured([sys.executable, "-c", "pass"], output_dir=tmp_path / "small")
    assert small == 0 and read_resources(tmp_path / "small").peak_rss_bytes < 100 * MiB
    assert len(ballast) == 400 * MiB


def test_descendants_are_covered_and_output_is_streamed(tmp_path):
    grandchild = f"import subprocess, sys; subprocess.run([sys.executable, '-c', \"b = b'y' * {150 * MiB}\"]); print('done')"
    lines = []
    assert run_measured([sys.executable, "-c", grandchild], output_dir=tmp_path, on_line=lines.append) == 0
    assert lines == ["done\n"]
    assert read_resources(tmp_path).peak_rss_bytes >= 150 * MiB


def test_interrupt_reaches_the_child_and_the_run_is_still_recorded(tmp_path):
    child = "import time; print('ready', flush=True); time.sleep(60)"
    wrapper = (
        "import sys; from pathlib import Path; from lisa_plugin.tools.axolotl_runner import run_measured; "
        f"sys.exit(run_measured([sys.executable, '-c', {child!r}], output_dir=Path(sys.argv[1]), forward_signals=True))"
    )
    # a session of its own: no terminal whose Ctrl-C would reach the child by itself
    proc = subprocess.Popen([sys.executable, "-c", wrapper, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline() == "ready\n"
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)  # to the wrapper alone
    assert proc.wait(timeout=30) == 128 + signal.SIGINT
    assert time.monotonic() - start < 20
    assert json.loads((tmp_path / RESOURCES_FILE).read_text())["exit_code"] == 128 + signal.SIGINT


def test_a_signal_before_the_child_exists_is_held_and_passed_on():
    from lisa_plugin.tools.axolotl_runner import _Forwarder

    forward = _Forwarder()
    forward(signal.SIGTERM, None)  # Ctrl-C or SIGTERM in the moment before the child is started
    assert forward.held == [signal.SIGTERM]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        forward.started(child.pid)
        assert child.wait(timeout=30) == -signal.SIGTERM and forward.held == []
    finally:
        child.kill()


def test_output_dir_from_config_or_override(tmp_path):
    config = tmp_path / "c.yml"
    config.write_text("output_dir: ./runs/x\n")
    assert config_output_dir(config, [], cwd=tmp_path) == tmp_path / "runs" / "x"
    assert config_output_dir(config, ["--output-dir", "/abs/y"], cwd=tmp_path).as_posix() == "/abs/y"
    assert config_output_dir(config, ["--output_dir=z"], cwd=tmp_path) == tmp_path / "z"
    config.write_text("base_model: m\n")
    assert config_output_dir(config, [], cwd=tmp_path) == tmp_path / "model-out"
