"""The ``lisa-plugin`` command: ``check``, ``train``, ``tiny``, ``norms``, ``ablate`` (and ``demo``, an alias of ``lisa-demo-train``).

``check CONFIG...`` validates what the plugin reads from Axolotl configs (the ``lisa:`` block,
the plugin listed without it, keys that cannot go with it) in seconds, without loading a model.
``train CONFIG [AXOLOTL ARGS]`` runs ``axolotl train`` and records its peak memory and wall time
in ``run_resources.json`` in the run's ``output_dir`` (see :mod:`lisa_plugin.tools.axolotl_runner`).
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

from lisa_formats.quiet import quiet_third_party
from lisa_plugin.tools.axolotl_runner import build_tiny
from lisa_plugin.tools.pretrained import add_parser as add_model_parser
from lisa_plugin.tools.pretrained import run_command as run_model_command
from lisa_plugin.tools.tiny import ARCHITECTURES


def _add_check_and_train(sub) -> None:
    p_check = sub.add_parser(
        "check", help="validate the LISA settings of Axolotl configs without loading a model (seconds)",
        description="Checks what the plugin reads: the `lisa:` block (keys, values, strategy options), "
        "`plugins:` listing lisa_plugin.LISAPlugin without a `lisa:` block or the reverse, and the keys that "
        "cannot go with LISA. What only the model can tell (its number of layers) is checked when "
        "`axolotl train` loads it; `axolotl preprocess CONFIG` checks all of Axolotl's own keys too.",
    )
    p_check.add_argument("configs", type=Path, nargs="+", metavar="CONFIG", help="Axolotl config YAML file(s)")
    p_train = sub.add_parser(
        "train", help="run `axolotl train CONFIG` and record its peak memory and wall time (run_resources.json)",
        description="Runs `axolotl train CONFIG AXOLOTL_ARGS...` and, when it ends, writes run_resources.json "
        "into the run's output_dir: the peak resident memory (RSS) of the training processes, the wall time, "
        "the command and its exit status, which this command returns. Ctrl-C reaches the training process.",
        epilog="GPU memory is not measured from outside: on CUDA the trainer logs its own peak.",
    )
    p_train.add_argument("config", type=Path, help="Axolotl config YAML file")
    p_train.add_argument("axolotl_args", nargs=argparse.REMAINDER, metavar="AXOLOTL_ARGS",
                         help="passed on to `axolotl train` (e.g. --launcher python)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lisa-plugin", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_check_and_train(sub)
    p_tiny = sub.add_parser("tiny", help="build the tiny offline model, tokenizer and data",
                            description="Builds the tiny offline model the example_configs/tiny-*.yml templates "
                            "train: OUT/model (random-init weights and a BPE tokenizer) and OUT/train.jsonl "
                            "(instruction data in the alpaca format).")
    p_tiny.add_argument("out", type=Path, help="folder for model/ (weights and tokenizer) and train.jsonl")
    p_tiny.add_argument("--arch", choices=ARCHITECTURES, default="llama", help="model architecture (default: %(default)s)")
    p_tiny.add_argument("--layers", type=int, default=6, help="number of decoder layers (default: %(default)s)")
    p_demo = sub.add_parser("demo", help="alias of `lisa-demo-train`: build the tiny model and train it with LISA through Axolotl")
    p_demo.add_argument("out", type=Path, nargs="?", default=Path("runs/demo"), help="output folder (default: %(default)s)")
    p_norms = sub.add_parser("norms", help="per-layer update norms of runs against their base (JSON, Markdown, PNG)")
    p_norms.add_argument("base", type=Path, help="the base model dir (safetensors)")
    p_norms.add_argument("runs", type=Path, nargs="+", help="full/LISA output dirs or PEFT LoRA adapter dirs")
    p_norms.add_argument("--output", type=Path, required=True, help="folder for norms.json, norms.md, norms.png")
    p_norms.add_argument("--layers-path", help="dotted path of the decoder layers, as `lisa.layers_path` (default: found)")
    p_ablate = sub.add_parser(
        "ablate", help="train a gamma/K grid of LISA runs from one config, then compare them",
        epilog="Arguments after `--` go to `python -m eval_harness compare`.",
    )
    p_ablate.add_argument("config", type=Path, help="an Axolotl config with a `lisa:` block")
    p_ablate.add_argument("--n-layers", default="1,2,4", help="gamma values, comma-separated (default: %(default)s)")
    p_ablate.add_argument("--interval-steps", default="5,20", help="K values, comma-separated (default: %(default)s)")
    p_ablate.add_argument("--output", type=Path, default=Path("runs/ablation"), help="folder for the runs and the comparison (default: %(default)s)")
    p_ablate.add_argument("--dry-run", action="store_true", help="write the configs and print the commands only")
    add_model_parser(sub)
    return parser


def _check(configs: list[Path]) -> int:
    import yaml

    from lisa_plugin.config import config_problems, plugin_listed, problems_message, settings_from_block

    failed = 0
    for path in configs:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            print(f"{path}: cannot read it as YAML: {exc}", file=sys.stderr)
            failed += 1
            continue
        if not isinstance(data, dict):
            print(f"{path}: expected a mapping of Axolotl config keys, got {type(data).__name__}", file=sys.stderr)
            failed += 1
            continue
        problems = config_problems(data)
        if problems:
            print(problems_message(path, problems), file=sys.stderr)
            failed += 1
        elif not plugin_listed(data):
            print(f"{path}: OK, no LISA (neither lisa_plugin.LISAPlugin in `plugins:` nor a `lisa:` block)")
        else:
            settings = settings_from_block(data.get("lisa"))
            shown = ", ".join(f"{k}={v}" for k, v in settings.model_dump().items()) if settings else "LISA off (empty block)"
            print(f"{path}: OK, lisa: {shown}")
    return 1 if failed else 0


def _train(config: Path, axolotl_args: list[str]) -> int:
    from lisa_plugin.tools.axolotl_runner import axolotl_command, axolotl_env, config_output_dir, run_measured

    if not config.is_file():
        print(f"error: no config file {config}", file=sys.stderr)
        return 2
    try:
        output_dir = config_output_dir(config, axolotl_args)
    except Exception as exc:  # a YAML error: let `axolotl train` say it in its own words
        print(f"warning: {config}: output_dir not found ({exc}); run_resources.json is not written", file=sys.stderr)
        output_dir = None
    command = [*axolotl_command(), "train", str(config), *axolotl_args]
    code = run_measured(command, output_dir=output_dir, env=axolotl_env(), forward_signals=True)
    if output_dir is not None:
        from lisa_formats.resources import RESOURCES_FILE, read_resources

        record = read_resources(output_dir)
        if record is None:
            print(f"lisa-plugin train: exit status {code}; nothing recorded ({output_dir} was not made)", file=sys.stderr)
            return code
        peak = f"{record.peak_rss_bytes / 2**30:.2f} GiB" if record.peak_rss_bytes else "unknown"
        print(f"lisa-plugin train: exit status {code}, peak RSS {peak}, {record.wall_s:.0f} s; "
              f"written to {output_dir / RESOURCES_FILE}", file=sys.stderr)
    return code


def _norms(args: argparse.Namespace) -> int:
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


def _demo(out: Path) -> int:
    import runpy

    # the demos live in lisa_demo, which composes this package with others: run, never import it
    sys.argv = ["lisa-plugin demo", "train", str(out)]
    try:
        runpy.run_module("lisa_demo", run_name="__main__")  # sys.argv[0] stays: the demo's help names this command
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    quiet_third_party()
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # everything after CONFIG goes to `axolotl train`, `--` included
        args = parser.parse_args(argv[:2])
        return _train(args.config, argv[2:])
    passthrough = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.command == "check":
        return _check(args.configs)
    if args.command == "tiny":
        build_tiny(args.out, args.arch, args.layers)
        return 0
    if args.command == "norms":
        return _norms(args)
    if args.command == "model":
        return run_model_command(args)
    if args.command == "ablate":
        from lisa_plugin.tools.ablation import ablate, parse_int_list

        try:
            gammas = parse_int_list(args.n_layers, "--n-layers")
            intervals = parse_int_list(args.interval_steps, "--interval-steps")
        except ValueError as exc:
            parser.error(str(exc))
        return ablate(args.config, gammas, intervals, args.output, passthrough, dry_run=args.dry_run)
    return _demo(args.out)


if __name__ == "__main__":
    sys.exit(main())
