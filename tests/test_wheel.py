"""A wheel built from this checkout works on its own: no editable install, no repository beside it.

The wheel is installed without dependencies into a fresh venv whose site-packages is followed
by the test venv's (through a ``.pth`` line, which does not run the editable install's finder),
so torch and Axolotl come from the test venv while every file of ours comes from the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.wheel


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)])
    (found,) = dist.glob("lisa_axolotl-*.whl")
    return found


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory, wheel) -> Path:
    venv = tmp_path_factory.mktemp("wheel-venv")
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "zz_test_venv_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    return venv


def test_the_wheel_holds_every_package_and_the_example_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("lisa_formats", "lisa_plugin", "lisa_plugin/core", "lisa_plugin/strategies",
                    "lisa_plugin/integrations", "lisa_plugin/tools", "eval_harness", "lisa_demo"):
        assert f"{package}/__init__.py" in names, package
    configs = {n for n in names if n.startswith("lisa_plugin/example_configs/")}
    for method in ("lisa", "lora", "full"):
        assert f"lisa_plugin/example_configs/tiny-{method}.yml" in configs
    assert any(n.startswith("lisa_plugin/example_configs/multi-gpu/") for n in configs)
    assert not any(n.startswith("tests/") for n in names)


def test_the_lisa_demo_runs_from_the_installed_wheel(wheel_venv, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(AXOLOTL_DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    python = wheel_venv / "bin" / "python"
    where = _run([str(python), "-c", "import lisa_plugin, lisa_plugin.tools.axolotl_runner as r; "
                  "print(lisa_plugin.__file__); print(r.example_configs_dir())"], cwd=tmp_path, env=env).stdout
    assert str(REPO) not in where and str(wheel_venv) in where, where
    proc = subprocess.run([str(wheel_venv / "bin" / "lisa-demo-train"), "out"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "LISA trained" in log and "activation counts per layer" in log
    assert (tmp_path / "out" / "lisa" / "lisa_history.json").is_file()
