"""Pure-bf16 AdamW against bf16 + fp32 master weights (``lisa.master_weights: fp32``), same run otherwise.

A tiny random Llama, the same init (rounded to bf16 once, so all three start equal), data, seed and
LISA sequence, trained three ways under a plain transformers Trainer with ``LISACallback``:

* ``fp32``: the model in float32 (the reference the other two try to follow);
* ``bf16``: the model in bfloat16, AdamW on the bf16 weights (updates below half a bf16 step are lost);
* ``bf16+master``: the model in bfloat16, ``master_weights: fp32``.

Prints the loss per step of each, the summed absolute gap of each bf16 run's loss curve to the fp32
one, and the distance of its final weights to the fp32 run's. Usage::

    python benchmarks/master_weights_quality.py --steps 40 --lr 1e-5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lisa_plugin import LISACallback  # noqa: E402

VARIANTS = {"fp32": (torch.float32, "none"), "bf16": (torch.bfloat16, "none"), "bf16+master": (torch.bfloat16, "fp32")}


class TokenData(torch.utils.data.Dataset):
    """Random token sequences, the same for every run with the same seed."""

    def __init__(self, n=32, length=16, vocab=128, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(3, vocab, (n, length), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_llama(dtype=torch.bfloat16, hidden=32, layers=4, vocab=128) -> LlamaForCausalLM:
    """A random Llama initialised in fp32 and rounded to bf16, so every dtype starts from the same weights."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).to(torch.bfloat16).to(dtype)


def train_variant(name: str, out: Path, *, steps: int, lr: float, n_layers: int = 1, interval: int = 3) -> Trainer:
    dtype, master = VARIANTS[name]
    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=4, learning_rate=lr, report_to=[],
        save_strategy="no", logging_steps=1, use_cpu=True, seed=2, disable_tqdm=True, lr_scheduler_type="constant",
    )
    trainer = Trainer(model=tiny_llama(dtype), args=args, train_dataset=TokenData())
    LISACallback(n_layers=n_layers, interval_steps=interval, master_weights=master).attach(trainer)
    trainer.train()
    return trainer


def losses(trainer: Trainer) -> list[float]:
    return [e["loss"] for e in trainer.state.log_history if "loss" in e]


def distance(trainer: Trainer, reference: Trainer) -> float:
    """2-norm of the difference of all weights to the reference run's, in fp32."""
    ref = dict(reference.model.named_parameters())
    params = trainer.model.named_parameters()
    total = sum(float((p.detach().float() - ref[n].detach().float()).norm() ** 2) for n, p in params)
    return total ** 0.5


def compare(steps: int, lr: float, n_layers: int = 1, interval: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: train_variant(name, Path(tmp) / name, steps=steps, lr=lr, n_layers=n_layers, interval=interval)
                for name in VARIANTS}
    curves = {name: losses(t) for name, t in runs.items()}
    return {
        "steps": steps, "lr": lr, "losses": curves,
        "loss_gap_to_fp32": {n: sum(abs(a - b) for a, b in zip(curves[n], curves["fp32"])) for n in curves},
        "weight_distance_to_fp32": {n: distance(t, runs["fp32"]) for n, t in runs.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--json", type=Path, help="also write the result here")
    ns = parser.parse_args(argv)
    result = compare(ns.steps, ns.lr)
    print(f"{'step':>4} " + " ".join(f"{n:>12}" for n in VARIANTS))
    for step, row in enumerate(zip(*result["losses"].values()), start=1):
        print(f"{step:>4} " + " ".join(f"{v:>12.5f}" for v in row))
    for key in ("loss_gap_to_fp32", "weight_distance_to_fp32"):
        print(f"{key}: " + ", ".join(f"{n} {v:.5g}" for n, v in result[key].items()))
    if ns.json:
        ns.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
