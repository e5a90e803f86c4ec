"""Shared fixtures: tiny locally built models, and real `axolotl train` runs on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLE_CONFIGS = REPO / "lisa_plugin" / "example_configs"

# Kinds of slow test (pyproject.toml declares them). A test of any kind is also `slow`, so
# `pytest -m "not slow"` is the fast lane; a test that uses a fixture running `axolotl train`
# is of the `axolotl` kind without having to say so.
SLOW_KINDS = ("axolotl", "ddp", "browser", "fastchat", "wheel", "realmodel")
AXOLOTL_FIXTURES = {"axolotl_runs"}
_current_item: pytest.Item | None = None

os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if AXOLOTL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.axolotl)
        if any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item) -> None:
    global _current_item
    _current_item = item


def run_torchrun(script: Path, out: Path, *args: str, nproc: int = 2) -> Path:
    """``torchrun --nproc_per_node NPROC SCRIPT ARGS`` on loopback with one thread per rank; its output
    goes to ``out/torchrun.log``, and a failure fails the test with the output's tail."""
    import socket

    require_marker("ddp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(port), str(script), *args]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    (out / "torchrun.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}"
    return out


def require_marker(kind: str) -> None:
    """Fail a test that does slow work of ``kind`` without carrying its marker (keeps the fast lane fast)."""
    if _current_item is not None and not _current_item.get_closest_marker(kind):
        raise AssertionError(
            f"{_current_item.nodeid} does `{kind}` work but is not marked: add @pytest.mark.{kind} "
            f"(or list the fixture in tests/conftest.py)"
        )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"tests read the benchmark files from {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A tiny Llama-layout model (6 layers), its tokenizer and alpaca-format data."""
    from lisa_plugin.tools.axolotl_runner import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny-llama"), "llama", 6)


@pytest.fixture(scope="session")
def tiny_gpt2_root(tmp_path_factory) -> Path:
    from lisa_plugin.tools.axolotl_runner import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2", 4)


def axolotl_config(method: str, tiny: Path, output_dir: Path, **overrides) -> dict:
    """The example config of ``method`` (full/lora/lisa), pointed at ``tiny``, with overrides."""
    cfg = yaml.safe_load((EXAMPLE_CONFIGS / f"tiny-{method}.yml").read_text())
    cfg.update(
        base_model=str(tiny / "model"),
        dataset_prepared_path=str(tiny / "prepared"),
        output_dir=str(output_dir),
    )
    cfg["datasets"][0]["path"] = str(tiny / "train.jsonl")
    for key, value in overrides.items():
        if key == "lisa" and isinstance(value, dict):
            cfg["lisa"] = {**cfg.get("lisa", {}), **value}
        elif value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    return cfg


def run_axolotl(cfg: dict, workdir: Path, *, env: dict | None = None, check: bool = True):
    """`axolotl train` in a subprocess, as a user runs it; returns the CompletedProcess."""
    from lisa_plugin.tools.axolotl_runner import axolotl_env

    require_marker("axolotl")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.yml"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    full_env = {**axolotl_env(), **(env or {})}
    axolotl = str(Path(sys.executable).parent / "axolotl")
    proc = subprocess.run(
        [axolotl, "train", str(config_path)], cwd=workdir, env=full_env, capture_output=True, text=True
    )
    (workdir / "axolotl.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"axolotl train failed ({proc.returncode}); last output:\n{(proc.stdout + proc.stderr)[-4000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def axolotl_runs(tmp_path_factory, tiny_root) -> Path:
    """A folder with real Axolotl runs of one tiny base model: lisa/, lora/, full/ (8 steps each)."""
    runs = tmp_path_factory.mktemp("runs")
    for method in ("lisa", "lora", "full"):
        cfg = axolotl_config(method, tiny_root, runs / method, max_steps=8, logging_steps=1)
        run_axolotl(cfg, runs / f".work-{method}")
    return runs


def load_json(path: Path):
    return json.loads(Path(path).read_text())
