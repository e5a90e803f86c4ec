"""The paper's gamma/K ablation over your own config: one LISA run per (n_layers, interval_steps).

``python -m lisa_plugin ablate CONFIG --n-layers 1,2,4 --interval-steps 5,20 --output runs/ablation``
writes ``runs/ablation/lisa-g{gamma}-k{K}.yml`` for every combination (its ``output_dir``
is ``runs/ablation/lisa-g{gamma}-k{K}``), trains each with ``axolotl train`` unless
it has finished before, then runs ``python -m eval_harness compare runs/ablation``
(arguments after ``--`` are passed to it), whose report lists gamma and K per run.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AblationRun:
    n_layers: int
    interval_steps: int
    config: Path
    output_dir: Path

    @property
    def name(self) -> str:
        return self.output_dir.name

    def finished(self) -> bool:
        """A run is done when its weights and LISA history are both saved."""
        weights = (self.output_dir / "model.safetensors").is_file() or (
            self.output_dir / "model.safetensors.index.json"
        ).is_file()
        return weights and (self.output_dir / "lisa_history.json").is_file()


def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{flag}: {text!r}; expected comma-separated positive integers like 1,2,4")
    return values


def write_configs(config: Path, n_layers: list[int], interval_steps: list[int], output: Path) -> list[AblationRun]:
    """One config per combination, identical to ``config`` except ``lisa.n_layers/interval_steps`` and ``output_dir``."""
    import yaml

    from lisa_plugin.config import LisaConfig

    base = yaml.safe_load(Path(config).read_text())
    if not isinstance(base, dict):
        raise ValueError(f"{config}: not a YAML mapping; expected an Axolotl config")
    plugins = base.get("plugins") or []
    if "lisa_plugin.LISAPlugin" not in plugins:
        plugins = [*plugins, "lisa_plugin.LISAPlugin"]
    output.mkdir(parents=True, exist_ok=True)
    runs = []
    for gamma in n_layers:
        for k in interval_steps:
            run_dir = output / f"lisa-g{gamma}-k{k}"
            lisa = {**(base.get("lisa") or {}), "n_layers": gamma, "interval_steps": k}
            LisaConfig(**lisa)  # a bad combination fails here, naming the key, before any training
            cfg = {**base, "plugins": plugins, "output_dir": str(run_dir), "lisa": lisa}
            path = output / f"{run_dir.name}.yml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            runs.append(AblationRun(gamma, k, path, run_dir))
    return runs


def ablate(
    config: Path,
    n_layers: list[int],
    interval_steps: list[int],
    output: Path,
    compare_args: list[str] | None = None,
    dry_run: bool = False,
) -> int:
    from lisa_plugin.tools.axolotl_runner import axolotl_command, axolotl_env

    runs = write_configs(config, n_layers, interval_steps, output)
    env = axolotl_env()
    failed = []
    for i, run in enumerate(runs, 1):
        command = [*axolotl_command(), "train", str(run.config)]
        prefix = f"[{i}/{len(runs)}] {run.name} (n_layers={run.n_layers}, interval_steps={run.interval_steps})"
        if run.finished():
            print(f"{prefix}: finished before, skipped", flush=True)
            continue
        print(f"{prefix}: {' '.join(command)}", flush=True)
        if dry_run:
            continue
        code = subprocess.call(command, env=env)
        if code != 0:
            print(f"{prefix}: axolotl train failed with exit status {code}", file=sys.stderr, flush=True)
            failed.append(run.name)
    compare = [sys.executable, "-m", "eval_harness", "compare", str(output), *(compare_args or [])]
    print(f"comparing: {' '.join(compare)}", flush=True)
    if dry_run:
        return 0
    code = subprocess.call(compare, env=env)
    if failed:
        print(f"training failed for {', '.join(failed)}", file=sys.stderr)
        return 1
    return code
