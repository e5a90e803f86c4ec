"""Command line: ``lisa-plugin tiny|demo|norms|ablate``.

``tiny`` builds the offline tiny model, tokenizer and instruction data that the
``example_configs/tiny-*.yml`` configs train on. ``demo`` does that and then runs
``axolotl train`` with the LISA config, and prints what LISA did. ``norms BASE RUN...``
writes the per-layer update norms of runs (the paper's Fig. 2, see ``norms.py``).
``ablate CONFIG`` trains and compares a gamma/K grid (see ``ablation.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lisa_plugin.tiny import ARCHITECTURES, TinySpec

EXAMPLE_CONFIGS = Path(__file__).resolve().parent.parent / "example_configs"


def build_tiny(out: Path, arch: str = "llama", num_layers: int = 6) -> Path:
    from lisa_plugin.tiny import build_tiny_model, write_instruction_data

    build_tiny_model(out / "model", TinySpec(arch=arch, num_layers=num_layers))
    write_instruction_data(out / "train.jsonl", n=512)
    print(f"tiny {arch} model, tokenizer and data written to {out}")
    return out


def write_config(
    template: Path, tiny: Path, output_dir: Path, dest: Path, *,
    dataset: Path | None = None, prepared: Path | None = None, overrides: dict | None = None,
) -> Path:
    """Copy an example config, pointing its paths at ``tiny`` (``model/``, ``train.jsonl``,
    ``prepared/`` unless ``dataset``/``prepared`` say otherwise) and ``output_dir``;
    ``overrides`` replace top-level keys (e.g. ``max_steps``)."""
    import yaml

    cfg = yaml.safe_load(template.read_text())
    cfg["base_model"] = str(tiny / "model")
    cfg["datasets"][0]["path"] = str(dataset or tiny / "train.jsonl")
    cfg["dataset_prepared_path"] = str(prepared or tiny / "prepared")
    cfg["output_dir"] = str(output_dir)
    cfg.update(overrides or {})
    dest.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def axolotl_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # `axolotl train` re-launches through `accelerate` found on PATH: use this interpreter's.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def demo(out: Path) -> int:
    from lisa_plugin.history import read_history

    tiny = out / "tiny"
    if not (tiny / "model" / "config.json").exists():
        build_tiny(tiny)
    config = write_config(EXAMPLE_CONFIGS / "tiny-lisa.yml", tiny, out / "lisa", out / "lisa.yml")
    axolotl = shutil.which("axolotl", path=axolotl_env()["PATH"]) or "axolotl"
    print(f"running: axolotl train {config}", flush=True)
    code = subprocess.call([axolotl, "train", str(config)], env=axolotl_env())
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lisa-plugin", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_tiny = sub.add_parser("tiny", help="build the tiny offline model, tokenizer and data")
    p_tiny.add_argument("out", type=Path)
    p_tiny.add_argument("--arch", choices=ARCHITECTURES, default="llama")
    p_tiny.add_argument("--layers", type=int, default=6)
    p_demo = sub.add_parser("demo", help="build the tiny model and train it with LISA through Axolotl")
    p_demo.add_argument("out", type=Path, nargs="?", default=Path("runs/demo"))
    p_norms = sub.add_parser("norms", help="per-layer update norms of runs against their base (JSON, Markdown, PNG)")
    p_norms.add_argument("base", type=Path, help="the base model dir (safetensors)")
    p_norms.add_argument("runs", type=Path, nargs="+", help="full/LISA output dirs or PEFT LoRA adapter dirs")
    p_norms.add_argument("--output", type=Path, required=True, help="folder for norms.json, norms.md, norms.png")
    p_ablate = sub.add_parser(
        "ablate", help="train a gamma/K grid of LISA runs from one config, then compare them",
        epilog="Arguments after `--` go to `python -m eval_harness compare`.",
    )
    p_ablate.add_argument("config", type=Path)
    p_ablate.add_argument("--n-layers", default="1,2,4", help="gamma values, comma-separated")
    p_ablate.add_argument("--interval-steps", default="5,20", help="K values, comma-separated")
    p_ablate.add_argument("--output", type=Path, default=Path("runs/ablation"))
    p_ablate.add_argument("--dry-run", action="store_true", help="write the configs and print the commands only")
    argv = sys.argv[1:] if argv is None else list(argv)
    passthrough = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.command == "tiny":
        build_tiny(args.out, args.arch, args.layers)
        return 0
    if args.command == "norms":
        from lisa_plugin.norms import measure_norms, markdown_table, write_profile

        try:
            profile = measure_norms(args.base, args.runs)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        paths = write_profile(profile, args.output)
        print(markdown_table(profile))
        print("written: " + ", ".join(str(p) for p in paths.values()))
        return 0
    if args.command == "ablate":
        from lisa_plugin.ablation import ablate, parse_int_list

        try:
            gammas = parse_int_list(args.n_layers, "--n-layers")
            intervals = parse_int_list(args.interval_steps, "--interval-steps")
        except ValueError as exc:
            parser.error(str(exc))
        return ablate(args.config, gammas, intervals, args.output, passthrough, dry_run=args.dry_run)
    return demo(args.out)


if __name__ == "__main__":
    sys.exit(main())
