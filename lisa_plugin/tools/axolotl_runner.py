"""The example configs shipped with the package, and running ``axolotl train`` on them, measured.

:func:`run_measured` is how our tools start a training run (``lisa-plugin train``, the demos):
a small interpreter (``measured_child.py``) starts the command and waits for it with ``os.wait4``,
whose resource usage covers it and every descendant it waited for (``accelerate launch`` and the
training process it starts); :func:`run_measured` writes the peak resident memory and wall time
to ``run_resources.json`` in the run's ``output_dir`` (:mod:`lisa_formats.resources`). ``ru_maxrss`` is the largest single process of
that tree, not their sum: with several training processes (DDP) it is the peak of one rank.
GPU memory is not measured from outside; on CUDA the trainer logs its own peak.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator, Sequence


def example_configs_dir() -> Path:
    """The folder of shipped example configs (``lisa_plugin/example_configs``), also from a wheel."""
    return Path(str(resources.files("lisa_plugin.example_configs")))


def example_config(name: str) -> Path:
    """A shipped example config by file name (``tiny-lisa.yml``, ``multi-gpu/...``)."""
    path = example_configs_dir() / name
    if not path.is_file():
        from lisa_formats.suggest import unknown

        names = [str(p.relative_to(example_configs_dir())) for p in example_configs_dir().rglob("*.y*ml")]
        raise FileNotFoundError(unknown("example config", name, names))
    return path


def build_tiny(out: Path, arch: str = "llama", num_layers: int = 6) -> Path:
    """The tiny offline model (``out/model``) and instruction data (``out/train.jsonl``)."""
    from lisa_plugin.tools.tiny import TinySpec, build_tiny_model, write_instruction_data

    build_tiny_model(out / "model", TinySpec(arch=arch, num_layers=num_layers))
    write_instruction_data(out / "train.jsonl", n=512)
    print(f"tiny {arch} model, tokenizer and data written to {out}")
    return out


def write_config(
    template: Path, tiny: Path, output_dir: Path, dest: Path, *,
    dataset: Path | None = None, prepared: Path | None = None, overrides: dict | None = None,
    base_model: Path | None = None,
) -> Path:
    """Copy an example config, pointing its paths at ``tiny`` (``model/``, ``train.jsonl``,
    ``prepared/`` unless ``base_model``/``dataset``/``prepared`` say otherwise) and ``output_dir``;
    ``overrides`` replace top-level keys (e.g. ``max_steps``)."""
    import yaml

    cfg = yaml.safe_load(Path(template).read_text())
    cfg["base_model"] = str(base_model or tiny / "model")
    cfg["datasets"][0]["path"] = str(dataset or tiny / "train.jsonl")
    cfg["dataset_prepared_path"] = str(prepared or tiny / "prepared")
    cfg["output_dir"] = str(output_dir)
    cfg.update(overrides or {})
    dest.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def axolotl_env() -> dict[str, str]:
    """The environment ``axolotl train`` runs in: offline, no telemetry, this interpreter's tools,
    and the log rules of :mod:`lisa_formats.quiet` (no CPU-machine noise from torchao and torch)."""
    from lisa_formats.quiet import quiet_env

    env = quiet_env()
    env.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # `axolotl train` re-launches through `accelerate` found on PATH: use this interpreter's.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def axolotl_command() -> list[str]:
    """``axolotl`` run by this interpreter, so it loads the plugin installed beside it.

    With ``--launcher python`` after ``train`` the whole run stays in that process (the
    default launcher re-starts through whichever ``accelerate`` is first on PATH).
    """
    return [sys.executable, "-m", "axolotl.cli.main"]


class _Forwarder:
    """The signal handler that passes SIGINT, SIGTERM and SIGHUP on to ``measured_child``, which passes
    them on in turn (a Ctrl-C typed at the terminal reaches the training process by itself, and only
    once). Installed before the child starts: a signal that comes first is held until :meth:`started`."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.held: list[int] = []

    def __call__(self, signum, _frame) -> None:
        if self.pid is None:
            self.held.append(signum)
            return
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def started(self, pid: int) -> None:
        self.pid = pid
        for signum in self.held:
            self(signum, None)
        self.held.clear()


@contextmanager
def _forwarding_signals(forward: _Forwarder) -> Iterator[None]:
    kinds = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {kind: signal.signal(kind, forward) for kind in kinds}
    try:
        yield
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)


def run_measured(
    command: Sequence[str], *, output_dir: Path | None, env: dict[str, str] | None = None, cwd: Path | None = None,
    on_line: Callable[[str], None] | None = None, forward_signals: bool = False,
) -> int:
    """Run ``command`` to its end and return its exit code; write ``output_dir/run_resources.json``
    (for a failed run only when ``output_dir`` exists).

    With ``on_line`` the child's stdout and stderr come, merged, one line at a time to it
    (the demo's log and summary); otherwise they go where ours go. ``forward_signals`` (main
    thread only) passes a Ctrl-C or SIGTERM on to the child and still records the run.
    """
    import tempfile

    from lisa_formats.resources import write_resources

    fd, result = tempfile.mkstemp(prefix="lisa-peak-rss-", suffix=".txt")
    os.close(fd)
    # started through a small interpreter: see measured_child for why the peak needs it
    wrapped = [sys.executable, "-I", str(Path(__file__).with_name("measured_child.py")), result, *command]
    piped = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "errors": "replace"}
    start = time.monotonic()
    try:
        forward = _Forwarder()
        with _forwarding_signals(forward) if forward_signals else nullcontext():
            proc = subprocess.Popen(wrapped, cwd=cwd, env=env, **(piped if on_line else {}))
            forward.started(proc.pid)
            if on_line is not None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    on_line(line)
                proc.stdout.close()
            code = proc.wait()
        wall = time.monotonic() - start
        text = Path(result).read_text(encoding="utf-8").strip()
    finally:
        Path(result).unlink(missing_ok=True)
    code = code if code >= 0 else 128 - code
    # a run that failed before making its output_dir (a config error) gets no folder made for it
    if output_dir is not None and (code == 0 or Path(output_dir).is_dir()):
        write_resources(output_dir, peak_rss_bytes=int(text) if text.isdigit() and int(text) else None,
                        peak_gpu_bytes=None, wall_s=round(wall, 3), command=[str(part) for part in command],
                        exit_code=code)
    return code


def config_output_dir(config: Path, extra_args: Sequence[str] = (), cwd: Path | None = None) -> Path:
    """Where ``axolotl train CONFIG EXTRA_ARGS`` writes: ``--output-dir``/``--output_dir`` if given,
    else the config's ``output_dir`` (Axolotl's default ``./model-out``), relative to ``cwd``."""
    import yaml

    value = None
    args = list(extra_args)
    for i, arg in enumerate(args):
        name, eq, rest = arg.partition("=")
        if name in ("--output-dir", "--output_dir"):
            value = rest if eq else (args[i + 1] if i + 1 < len(args) else None)
    if value is None:
        data = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
        value = (data.get("output_dir") if isinstance(data, dict) else None) or "./model-out"
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else Path(cwd or os.getcwd()) / path
