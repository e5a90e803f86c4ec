"""Training and pre-training text for the offline demo, drawn from the training pools only.

The benchmark-format test data (GSM8K, PubMedQA, MT-Bench) is written by each benchmark's own
demo generator in :mod:`eval_harness.benchmarks` (``write_demo_data``); the word problems and
studies here come from the same generators with the training seeds, so no test item is ever
trained on.
"""

from __future__ import annotations

from eval_harness.benchmarks.gsm8k import PRETRAIN_SEED, TRAIN_POOL, TRAIN_SEED, word_problems
from eval_harness.benchmarks.pubmedqa import studies, study_text
from eval_harness.tasks.utils import strip_calculator_notes

MAX_TRAIN_EXAMPLES = TRAIN_POOL  # the demo's GSM8K test split is kept clear of this many training problems


def alpaca_training_set(n: int, seed: int = TRAIN_SEED) -> list[dict[str, str]]:
    """Fine-tuning data: word problems from the training pool, as alpaca records."""
    return [{"instruction": p["question"], "input": "", "output": strip_calculator_notes(p["answer"])}
            for p in word_problems(n, seed)]


def chat_training_set(n: int, seed: int = TRAIN_SEED) -> list[dict[str, list[dict[str, str]]]]:
    """Fine-tuning data for a chat model: each word problem one conversation, the user turn worded as
    lm-eval's GSM8K prompt (``Question: ...\nAnswer:``), which is what evaluation sends through the
    same chat template, and the answer in GSM8K's form (steps, then ``#### N``)."""
    return [{"messages": [{"role": "user", "content": f"Question: {p['question']}\nAnswer:"},
                          {"role": "assistant", "content": strip_calculator_notes(p["answer"])}]}
            for p in word_problems(n, seed)]


def pretraining_text(n: int = 2000, seed: int = PRETRAIN_SEED) -> list[str]:
    """General sentences plus training-pool word problems and studies (never the test pools)."""
    from lisa_plugin.tools.corpus import paragraphs

    problems = [f"Question: {p['question']}\nAnswer: {strip_calculator_notes(p['answer'])}"
                for p in word_problems(n, seed)]
    return paragraphs(n, seed=seed) + problems + [study_text(s) for s in studies(n // 2, seed)]
