"""The ``lisa-plugin`` command: ``tiny``, ``norms``, ``ablate`` (and ``demo``, an alias of ``lisa-demo-train``).

``tiny`` builds the offline tiny model, tokenizer and instruction data that the
``example_configs/tiny-*.yml`` configs train on. ``demo`` does that and then runs
``axolotl train`` with the LISA config, and prints what LISA did. ``norms BASE RUN...``
writes the per-layer update norms of runs (the paper's Fig. 2, see :mod:`lisa_plugin.tools.norms`).
``ablate CONFIG`` trains and compares a gamma/K grid (see :mod:`lisa_plugin.tools.ablation`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lisa_plugin.tools.axolotl_runner import build_tiny
from lisa_plugin.tools.tiny import ARCHITECTURES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lisa-plugin", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_tiny = sub.add_parser("tiny", help="build the tiny offline model, tokenizer and data")
    p_tiny.add_argument("out", type=Path)
    p_tiny.add_argument("--arch", choices=ARCHITECTURES, default="llama")
    p_tiny.add_argument("--layers", type=int, default=6)
    p_demo = sub.add_parser("demo", help="alias of `lisa-demo-train`: build the tiny model and train it with LISA through Axolotl")
    p_demo.add_argument("out", type=Path, nargs="?", default=Path("runs/demo"))
    p_norms = sub.add_parser("norms", help="per-layer update norms of runs against their base (JSON, Markdown, PNG)")
    p_norms.add_argument("base", type=Path, help="the base model dir (safetensors)")
    p_norms.add_argument("runs", type=Path, nargs="+", help="full/LISA output dirs or PEFT LoRA adapter dirs")
    p_norms.add_argument("--output", type=Path, required=True, help="folder for norms.json, norms.md, norms.png")
    p_norms.add_argument("--layers-path", help="dotted path of the decoder layers, as `lisa.layers_path` (default: found)")
    p_ablate = sub.add_parser(
        "ablate", help="train a gamma/K grid of LISA runs from one config, then compare them",
        epilog="Arguments after `--` go to `python -m eval_harness compare`.",
    )
    p_ablate.add_argument("config", type=Path)
    p_ablate.add_argument("--n-layers", default="1,2,4", help="gamma values, comma-separated")
    p_ablate.add_argument("--interval-steps", default="5,20", help="K values, comma-separated")
    p_ablate.add_argument("--output", type=Path, default=Path("runs/ablation"))
    p_ablate.add_argument("--dry-run", action="store_true", help="write the configs and print the commands only")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    passthrough = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.command == "tiny":
        build_tiny(args.out, args.arch, args.layers)
        return 0
    if args.command == "norms":
        from lisa_plugin.tools.norms import measure_norms, markdown_table, write_profile

        try:
            profile = measure_norms(args.base, args.runs, layers_path=args.layers_path)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        paths = write_profile(profile, args.output)
        print(markdown_table(profile))
        print("written: " + ", ".join(str(p) for p in paths.values()))
        return 0
    if args.command == "ablate":
        from lisa_plugin.tools.ablation import ablate, parse_int_list

        try:
            gammas = parse_int_list(args.n_layers, "--n-layers")
            intervals = parse_int_list(args.interval_steps, "--interval-steps")
        except ValueError as exc:
            parser.error(str(exc))
        return ablate(args.config, gammas, intervals, args.output, passthrough, dry_run=args.dry_run)
    import runpy

    # the demos live in lisa_demo, which composes this package with others: run, never import it
    sys.argv = ["lisa-demo-train", "train", str(args.out)]
    try:
        runpy.run_module("lisa_demo", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
