"""Tokens per second of each generation backend on the same model and prompts, and their greedy agreement.

    python benchmarks/generation_backends.py --model DIR --engine-python ENGINE/bin/python \\
        [--prompts 20] [--max-new-tokens 64] [--concurrency 8] [--batch-size 8] [--threads N]

The prompts are MT-Bench first turns rendered by the harness's own chat format (the model's chat
template, else FastChat's), decoded greedily. ``hf`` generates in this process in batches of
``--batch-size`` (``transformers`` ``generate``, float32, CPU or the first GPU); ``server`` starts
a vLLM server from the engine environment exactly as ``compare --engine-python`` does and sends
``--concurrency`` requests at once. The server's start-up is timed apart from generation. New
tokens are counted by re-tokenizing each answer, the same way for both backends. Agreement counts
answers that are identical, character for character.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a local model folder (config, weights, tokenizer)")
    p.add_argument("--engine-python", required=True, help="the vLLM venv's Python (`python -m eval_harness engine setup`)")
    p.add_argument("--mt-bench-dir", type=Path, default=REPO.parent / "shared" / "data" / "mt_bench")
    p.add_argument("--prompts", type=int, default=20)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, help="torch threads for hf (default: torch's own)")
    p.add_argument("--max-model-len", type=int, default=2048)
    return p.parse_args(argv)


def timed(generate, prompts: list[str], batch: int) -> tuple[list[str], float]:
    start, out = time.perf_counter(), []
    for i in range(0, len(prompts), batch):
        out += generate(prompts[i : i + batch])
    return out, time.perf_counter() - start


def run_hf(args, tokenizer, chat, prompts):
    import torch

    from eval_harness.mt_bench.answer import _generate, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(args.model, None, device, "float32")
    def greedy(batch):
        return _generate(model, tokenizer, chat, batch, [0.0] * len(batch), args.max_new_tokens, device, 0)

    return timed(greedy, prompts, args.batch_size)


def run_server(args, tokenizer, chat, prompts, log_dir: Path):
    from eval_harness.engines.backend import BackendSettings
    from eval_harness.engines.session import RunServer
    from eval_harness.mt_bench.answer import _generate_served

    settings = BackendSettings(kind="server", engine_python=args.engine_python, max_model_len=args.max_model_len)
    server = RunServer(settings, "bench", args.model, None, args.model, log_dir, lambda line: print(line, file=sys.stderr))
    try:
        start = time.perf_counter()
        endpoint = server.endpoint()
        startup = time.perf_counter() - start
        def greedy(batch):
            return _generate_served(endpoint, tokenizer, chat, batch, [0.0] * len(batch), args.max_new_tokens, 0,
                                    args.concurrency)

        answers, seconds = timed(greedy, prompts, len(prompts))
        return answers, seconds, startup, f"{endpoint.engine} {endpoint.version}"
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    from eval_harness.mt_bench import data
    from eval_harness.mt_bench.answer import load_tokenizer, resolve_template

    args = parse_args(argv)
    questions = data.load(args.mt_bench_dir).questions[: args.prompts]
    tokenizer = load_tokenizer(args.model, None)
    chat = resolve_template(None, tokenizer, args.model)
    prompts = [chat.prompt(tokenizer, [q.turns[0]], []) for q in questions]
    with tempfile.TemporaryDirectory() as log_dir:
        served, served_s, startup, engine = run_server(args, tokenizer, chat, prompts, Path(log_dir))
    local, local_s = run_hf(args, tokenizer, chat, prompts)

    def tokens(answers: list[str]) -> int:
        return sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)

    print(f"model {args.model}; {len(prompts)} MT-Bench first turns, greedy, at most {args.max_new_tokens} new tokens; "
          f"chat format {chat.name}")
    print(f"{'backend':<28}{'new tokens':>11}{'seconds':>9}{'tok/s':>8}")
    rows = [(f"hf (batch {args.batch_size})", local, local_s),
            (f"server {engine} (x{args.concurrency})", served, served_s)]
    for name, answers, seconds in rows:
        print(f"{name:<28}{tokens(answers):>11}{seconds:>9.1f}{tokens(answers) / seconds:>8.1f}")
    print(f"server start-up: {startup:.0f} s (not counted above)")
    same = sum(a == b for a, b in zip(local, served))
    print(f"greedy agreement: {same}/{len(prompts)} answers identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
