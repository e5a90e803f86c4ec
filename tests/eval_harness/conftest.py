"""Fixtures for the compare/discovery/lm-eval tests: run folders built from the shared Axolotl runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def link_runs(dest: Path, source: Path, names: tuple[str, ...]) -> Path:
    """A runs folder whose runs are symlinks to ``source``'s, so tests can add broken ones beside them."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        (dest / name).symlink_to(source / name, target_is_directory=True)
    return dest


def copy_run(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest


def truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def rebase_adapter(run_dir: Path, base: Path) -> None:
    """Point an adapter run at another base model, as a run trained from it would be."""
    cfg_path = run_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(base)
    cfg_path.write_text(json.dumps(cfg))


@pytest.fixture(scope="session")
def other_base(tmp_path_factory, tiny_root) -> Path:
    """A second base model dir (a copy of the tiny one: different path, so a different base)."""
    dest = tmp_path_factory.mktemp("other-base") / "model"
    shutil.copytree(tiny_root / "model", dest)
    return dest
