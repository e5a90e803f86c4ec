"""LISA alone, on the tiny offline model: build it, ``axolotl train`` it, show what LISA did."""

from __future__ import annotations

import sys
from pathlib import Path


def run_train_demo(out: Path) -> int:
    from lisa_formats.history import read_history
    from lisa_plugin.tools.axolotl_runner import (
        axolotl_command, axolotl_env, build_tiny, example_config, run_measured, write_config,
    )

    tiny = out / "tiny"
    if not (tiny / "model" / "config.json").exists():
        build_tiny(tiny)
    config = write_config(example_config("tiny-lisa.yml"), tiny, out / "lisa", out / "lisa.yml")
    print(f"running: axolotl train {config} --launcher python", flush=True)
    code = run_measured([*axolotl_command(), "train", str(config), "--launcher", "python"], output_dir=out / "lisa",
                        env=axolotl_env())
    if code != 0:
        print(f"axolotl train failed with exit status {code}", file=sys.stderr)
        return code
    history = read_history(out / "lisa")
    switches = history.switches
    k = history.settings["interval_steps"]
    print(f"\nLISA trained {len(switches)} intervals of {k} optimizer steps (optimizer state at the end of each):")
    for switch, after in zip(switches, switches[1:] + [None]):
        held = f"{after['optimizer_state_bytes_before'] / 2**20:.2f} MB" if after else "(end of training)"
        print(f"  steps {switch['step']:>4}-{switch['step'] + k - 1:<4} layers {switch['active']}  {held}")
    print(f"activation counts per layer: {history.activation_counts}")
    print(f"model and lisa_history.json in {out / 'lisa'}")
    return 0
