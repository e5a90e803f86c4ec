"""Run discovery on real Axolotl outputs: method, settings, base model, training facts, broken runs."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml
from conftest import copy_run, link_runs, rebase_adapter, truncate

from lisa_plugin.tools.axolotl_runner import example_config

from lisa_formats.resources import RESOURCES_FILE, write_resources

from eval_harness.discovery import (
    MEMORY_KINDS,
    VANILLA,
    RunError,
    check_safetensors,
    discover_runs,
    read_run,
    read_training_facts,
)

def example(method: str) -> dict:
    return yaml.safe_load(example_config(f"tiny-{method}.yml").read_text())


def by_name(discovery) -> dict:
    return {run.name: run for run in discovery.runs}


def test_methods_settings_and_base_from_axolotl_outputs(axolotl_runs, tiny_root):
    found = discover_runs(axolotl_runs)
    runs = by_name(found)
    assert found.problems == []  # the .work-* dirs beside the runs are hidden, not "not a run"
    assert [r.name for r in found.runs] == [VANILLA, "full", "lisa", "lora"]
    base = str((tiny_root / "model").resolve())
    assert found.base_model == base
    assert all(r.base_model == base for r in found.runs) and all(r.ok for r in found.runs)

    lisa_cfg, lora_cfg = example("lisa")["lisa"], example("lora")
    assert runs["lisa"].method == "LISA"
    assert runs["lisa"].settings["gamma"] == lisa_cfg["n_layers"]
    assert runs["lisa"].settings["K"] == lisa_cfg["interval_steps"]
    assert runs["lisa"].settings["strategy"] == lisa_cfg["strategy"]
    assert runs["lora"].method == "LoRA"
    assert (runs["lora"].settings["r"], runs["lora"].settings["alpha"]) == (lora_cfg["lora_r"], lora_cfg["lora_alpha"])
    assert runs["lora"].adapter_path == str((axolotl_runs / "lora").resolve())
    assert runs["lora"].model_path == base  # evaluated as base + adapter, never merged
    assert runs["full"].method == "Full" and runs["full"].adapter_path is None
    assert runs["full"].model_path == str((axolotl_runs / "full").resolve())
    assert all(runs[m].settings["max_steps"] == 8 for m in ("full", "lisa", "lora"))
    assert runs[VANILLA].model_path == base and runs[VANILLA].adapter_path is None


def test_training_facts(axolotl_runs):
    runs = by_name(discover_runs(axolotl_runs))
    for name in ("full", "lisa", "lora"):
        facts = runs[name].training
        assert facts.loss_curve, name
        assert all(p["step"] >= 1 and p["loss"] > 0 for p in facts.loss_curve)
        assert facts.loss_curve[-1]["step"] == 8
        assert facts.runtime_s is not None and facts.runtime_s > 0
        assert "debug.log" in facts.sources
    history = json.loads((axolotl_runs / "lisa" / "lisa_history.json").read_text())
    full, lisa, lora = runs["full"].training, runs["lisa"].training, runs["lora"].training
    assert lisa.trainable_params == max(s["trainable_params"] for s in history["switches"])
    assert full.trainable_params == full.total_params and lisa.trainable_params < full.total_params
    assert 0 < lora.trainable_params < lora.total_params


def test_config_read_from_debug_log_without_model_card(axolotl_runs, tmp_path):
    run_dir = copy_run(axolotl_runs / "lisa", tmp_path / "lisa-no-card")
    (run_dir / "README.md").unlink()
    run = read_run(run_dir)
    assert run.config_source == "debug.log"
    assert run.method == "LISA" and run.settings["gamma"] == example("lisa")["lisa"]["n_layers"]


def test_trainer_state_gives_steps(tmp_path, axolotl_runs):
    run_dir = copy_run(axolotl_runs / "full", tmp_path / "with-state")
    log = [{"step": 10, "loss": 2.5}, {"step": 20, "loss": 2.0, "memory/max_allocated (GiB)": 3.25},
           {"step": 20, "train_runtime": 12.5, "train_loss": 2.2}]
    (run_dir / "trainer_state.json").write_text(json.dumps({"log_history": log}))
    facts = read_training_facts(run_dir, {"logging_steps": 10})
    assert [p["step"] for p in facts.loss_curve] == [10, 20]
    assert (facts.runtime_s, facts.train_loss, facts.peak_memory_gib) == (12.5, 2.2, 3.25)
    assert facts.sources[0] == "trainer_state.json"


def _write_safetensors(path: Path, n: int, pad: int = 0) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * (4 * n + pad))


def test_check_safetensors(tmp_path):
    good = tmp_path / "good.safetensors"
    _write_safetensors(good, 6)
    assert check_safetensors(good) == 6
    long = tmp_path / "long.safetensors"
    _write_safetensors(long, 6, pad=3)
    with pytest.raises(RunError, match="long.safetensors"):
        check_safetensors(long)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(struct.pack("<Q", 5) + b"nope!" + b"\0" * 10)
    with pytest.raises(RunError, match="not JSON"):
        check_safetensors(garbage)


def test_broken_runs_and_non_runs_are_reported(axolotl_runs, tmp_path):
    runs = link_runs(tmp_path / "runs", axolotl_runs, ("full", "lora"))
    truncate(copy_run(axolotl_runs / "full", runs / "truncated") / "model.safetensors", 1000)
    (copy_run(axolotl_runs / "lora", runs / "no-adapter-weights") / "adapter_model.safetensors").unlink()
    (runs / "notes").mkdir()
    (runs / "notes" / "todo.txt").write_text("compare later")
    (runs / "old-report" / "results").mkdir(parents=True)  # an earlier `compare --output runs/old-report`
    (runs / "old-report" / "results.json").write_text("{}")
    found = discover_runs(runs)
    named = by_name(found)
    assert not found.ok
    assert named["full"].ok and named["lora"].ok and named[VANILLA].ok
    assert "truncated" in named["truncated"].errors[0] and "model.safetensors" in named["truncated"].errors[0]
    assert "no weights found" in named["no-adapter-weights"].errors[0]
    assert "old-report" not in by_name(found)
    assert len(found.problems) == 1 and "notes" in found.problems[0] and "not an Axolotl output dir" in found.problems[0]


def test_runs_on_another_base_model_are_flagged(axolotl_runs, tmp_path, other_base):
    runs = link_runs(tmp_path / "runs", axolotl_runs, ("full", "lora", "lisa"))
    rebase_adapter(copy_run(axolotl_runs / "lora", runs / "lora-other"), other_base)
    named = by_name(discover_runs(runs))
    assert named["full"].ok and named["lora"].ok
    (error,) = named["lora-other"].errors
    assert str(other_base.resolve()) in error and "differs" in error
    # choosing the other base explicitly flips which runs are comparable
    named = by_name(discover_runs(runs, base_model=str(other_base)))
    assert named["lora-other"].ok and not named["full"].ok
    assert named[VANILLA].model_path == str(other_base.resolve())


def test_overrides(axolotl_runs):
    found = discover_runs(
        axolotl_runs, method_overrides={"full": "lisa", "nope": "LoRA"}, setting_overrides={"lora": {"r": "8"}}
    )
    named = by_name(found)
    assert named["full"].method == "LISA"  # canonical spelling
    assert named["lora"].settings["r"] == 8
    assert any("'nope'" in p for p in found.problems)


def _fake_full_run(run_dir: Path, trainer_memory_gib: float) -> Path:
    """A full-weights run dir without a model behind it: config.json, a valid safetensors header, a trainer log."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    _write_safetensors(run_dir / "model.safetensors", 4)
    log = [{"step": 1, "loss": 2.0, "memory/max_allocated (GiB)": trainer_memory_gib}, {"step": 1, "train_runtime": 3.0}]
    (run_dir / "trainer_state.json").write_text(json.dumps({"log_history": log}))
    return run_dir


def test_peak_memory_falls_back_to_the_measured_one(tmp_path):
    """On CPU the trainer logs zeros: run_resources.json's peak RSS is used, and said to be RSS."""
    cpu = _fake_full_run(tmp_path / "cpu", 0.0)
    assert read_run(cpu).training.peak_memory_gib is None  # zeros are "not measured", not "no memory"
    write_resources(cpu, peak_rss_bytes=3 * 2**30 + 2**29, peak_gpu_bytes=None, wall_s=9.5,
                    command=["axolotl", "train", "c.yml"], exit_code=0)
    facts = read_run(cpu).training
    assert (facts.peak_memory_gib, facts.peak_memory_kind) == (3.5, "rss_process")
    assert RESOURCES_FILE in facts.sources and "RSS" in MEMORY_KINDS[facts.peak_memory_kind]
    # measured GPU memory comes before RSS; what the trainer logged comes before both
    write_resources(cpu, peak_rss_bytes=2**30, peak_gpu_bytes=2**31, wall_s=9.5, command=["axolotl"], exit_code=0)
    assert (read_run(cpu).training.peak_memory_gib, read_run(cpu).training.peak_memory_kind) == (2.0, "gpu_process")
    gpu = _fake_full_run(tmp_path / "gpu", 1.25)
    write_resources(gpu, peak_rss_bytes=2**30, peak_gpu_bytes=None, wall_s=9.5, command=["axolotl"], exit_code=0)
    assert (read_run(gpu).training.peak_memory_gib, read_run(gpu).training.peak_memory_kind) == (1.25, "gpu_trainer")


def test_unreadable_resources_file_is_a_warning_naming_it(tmp_path):
    run_dir = _fake_full_run(tmp_path / "run", 0.0)
    (run_dir / RESOURCES_FILE).write_text("{not json")
    run = read_run(run_dir)
    assert run.ok and run.training.peak_memory_gib is None
    assert any(str(run_dir / RESOURCES_FILE) in w and "peak memory not taken from it" in w for w in run.warnings)
