"""One rank of the DDP tests: ``torchrun --nproc_per_node 2 ddp_worker.py OUT_DIR`` (CPU, gloo).

Also importable: the single-process reference run uses the same model, data and settings.
Each scenario trains a tiny Llama with LISA under a plain transformers Trainer and writes,
per rank, ``OUT_DIR/{scenario}-rank{r}.json``: a digest of the final weights, the bytes
all-reduced per optimizer step (DDP's buckets, counted by a comm hook, and LISA's own),
and which parameters changed at each step. Rank 0 also saves the final weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from test_callback import TokenData  # this folder is on sys.path: pytest's rootdir insertion, or the script's own
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

from lisa_plugin import LISACallback

SCENARIOS = {
    # name: (LISACallback settings, TrainingArguments overrides)
    "plain": (dict(n_layers=1, interval_steps=2), dict(gradient_accumulation_steps=2)),
    # Gradient-driven sampling: ranks agree only if they read the same (reduced) gradients.
    "checkpointing": (dict(n_layers=2, interval_steps=2, strategy="adaptive"), dict(gradient_checkpointing=True)),
    "reentrant-no-embeddings": (
        dict(n_layers=1, interval_steps=2, train_embeddings=False),
        dict(gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True}),
    ),
    "no-embeddings-no-head": (dict(n_layers=1, interval_steps=2, train_embeddings=False, train_head=False), {}),
}
# Passed as `Trainer(callbacks=[...])`, not attached: the model is prepared in `on_init_end`.
CONSTRUCTOR_PATH = "checkpointing"
NUM_LAYERS = 4
MAX_STEPS = 6


def tiny_model(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def make_trainer(output_dir, lisa_settings, overrides, *, per_device_batch, model_seed=0, attach=True):
    args = TrainingArguments(
        **{
            **dict(
                output_dir=str(output_dir), max_steps=MAX_STEPS, per_device_train_batch_size=per_device_batch,
                learning_rate=1e-3, adam_epsilon=1e-4, weight_decay=0.1, max_grad_norm=0.5, report_to=[], save_strategy="no",
                logging_steps=100, use_cpu=True, seed=5, disable_tqdm=True,
            ),
            **overrides,
        }
    )
    lisa = LISACallback(**lisa_settings)
    data = TokenData(n=48, length=16, vocab=128)
    trainer = Trainer(model=tiny_model(model_seed), args=args, train_dataset=data, callbacks=[] if attach else [lisa])
    if attach:
        lisa.attach(trainer)
    return trainer, lisa


class CommCounter(TrainerCallback):
    """Counts DDP's all-reduced bucket bytes and LISA's own, per optimizer step; notes changed params."""

    def __init__(self, trainer, lisa):
        self.trainer, self.lisa = trainer, lisa
        self.ddp_bytes = 0
        self.steps = []

    def on_train_begin(self, args, state, control, **kwargs):
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        def counting_hook(process_group, bucket):
            self.ddp_bytes += bucket.buffer().numel() * bucket.buffer().element_size()
            return default_hooks.allreduce_hook(process_group, bucket)

        self.trainer.model_wrapped.register_comm_hook(None, counting_hook)
        self._marks = (0, 0)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self._before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        changed = sorted(n for n, p in model.named_parameters() if not torch.equal(p, self._before[n]))
        ours = self.lisa.grad_sync.bytes_reduced
        self.steps.append(
            dict(
                active=list(self.lisa.switcher.active), changed=changed,
                ddp_bytes=self.ddp_bytes - self._marks[0], lisa_bytes=ours - self._marks[1],
            )
        )
        self._marks = (self.ddp_bytes, ours)


def digest(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def param_groups(model) -> dict[str, int]:
    """Bytes of E, H, one decoder layer and the whole model (fp32)."""
    size = lambda params: sum(p.numel() * p.element_size() for p in params)  # noqa: E731
    return dict(
        embeddings=size(model.model.embed_tokens.parameters()),
        head=size(list(model.lm_head.parameters()) + list(model.model.norm.parameters())),
        layer=size(model.model.layers[0].parameters()),
        model=size(model.parameters()),
    )


def main(out_dir: Path) -> None:
    rank = int(os.environ["RANK"])
    for name, (lisa_settings, overrides) in SCENARIOS.items():
        # Rank 1 starts from other weights: the run must still start from rank 0's.
        trainer, lisa = make_trainer(
            out_dir / name, lisa_settings, {**overrides, "ddp_backend": "gloo"}, per_device_batch=2, model_seed=rank,
            attach=name != CONSTRUCTOR_PATH,
        )
        counter = CommCounter(trainer, lisa)
        trainer.add_callback(counter)
        trainer.train()
        model = trainer.model
        result = dict(
            digest=digest(model), steps=counter.steps, groups=param_groups(model),
            switches=lisa.switcher.history.switches, reductions=lisa.grad_sync.reductions,
        )
        (out_dir / f"{name}-rank{rank}.json").write_text(json.dumps(result))
        if rank == 0:
            torch.save({n: p.detach() for n, p in model.named_parameters()}, out_dir / f"{name}-weights.pt")
    torch.distributed.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
