"""Optimizer-state bytes of LISA variants on the tiny model, through real `axolotl train` runs.

    python benchmarks/tiny_optimizer_state.py [--steps 60] [--gamma 2] [--interval 5] [--out runs/bench-state]

Compares lisa_plugin with ``optimizer_state: release`` and ``keep``, Axolotl's built-in LISA
(``lisa_n_layers`` / ``lisa_step_interval``) and full fine-tuning, all with ``adamw_torch``, and
prints a Markdown table: peak and final optimizer-state bytes, and the analytic AdamW bound for
E + H + gamma layers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from lisa_plugin.tools.axolotl_runner import axolotl_env, build_tiny, example_config  # noqa: E402


def run(name: str, cfg: dict, out: Path) -> dict:
    cfg = {**cfg, "output_dir": str(out / name), "plugins": cfg.get("plugins", []) + ["optimizer_probe.ProbePlugin"]}
    path = out / f"{name}.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**axolotl_env(), "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    print(f"[{name}] axolotl train {path}", flush=True)
    with open(out / f"{name}.log", "w") as log:
        subprocess.run([str(Path(sys.executable).parent / "axolotl"), "train", str(path)], env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return json.loads((out / name / "optimizer_probe.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--gamma", type=int, default=2)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-state"))
    args = parser.parse_args()
    out = args.out.resolve()
    tiny = out / "tiny"
    if not (tiny / "model" / "config.json").exists():
        build_tiny(tiny)
    base = yaml.safe_load(example_config("tiny-full.yml").read_text())
    base.update(base_model=str(tiny / "model"), dataset_prepared_path=str(tiny / "prepared"), max_steps=args.steps, seed=7)
    base["datasets"][0]["path"] = str(tiny / "train.jsonl")
    lisa = {"n_layers": args.gamma, "interval_steps": args.interval}
    variants = {
        "ours-release": {**base, "plugins": ["lisa_plugin.LISAPlugin"], "lisa": {**lisa, "optimizer_state": "release"}},
        "ours-keep": {**base, "plugins": ["lisa_plugin.LISAPlugin"], "lisa": {**lisa, "optimizer_state": "keep"}},
        "axolotl-builtin-lisa": {**base, "lisa_n_layers": args.gamma, "lisa_step_interval": args.interval},
        "full": base,
    }
    results = {name: run(name, cfg, out) for name, cfg in variants.items()}

    from transformers import AutoModelForCausalLM

    from lisa_plugin.core.optimizer_state import adamw_state_bound

    model = AutoModelForCausalLM.from_pretrained(tiny / "model")
    eh = [p for n, p in model.named_parameters() if not n.startswith("model.layers.")]
    layer = list(model.model.layers[0].parameters())
    bound = adamw_state_bound(eh + layer * args.gamma)
    full = results["full"]["peak_bytes"]
    lines = [
        f"Tiny Llama ({sum(p.numel() for p in model.parameters()):,} parameters, {len(model.model.layers)} layers), "
        f"{args.steps} steps, gamma={args.gamma}, K={args.interval}, adamw_torch. "
        f"Analytic AdamW bound for E+H+{args.gamma} layers: {bound:,} bytes.",
        "",
        "| run | peak optimizer state (bytes) | final (bytes) | peak / bound | peak / full AdamW |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['peak_bytes']:,} | {r['final_bytes']:,} | {r['peak_bytes'] / bound:.3f} | {r['peak_bytes'] / full:.3f} |")
    table = "\n".join(lines)
    print(table)
    (out / "optimizer_state.md").write_text(table + "\n")
    (out / "optimizer_state.json").write_text(json.dumps({"bound": bound, "results": results}, indent=2))


if __name__ == "__main__":
    main()
