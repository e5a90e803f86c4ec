"""LISA under FSDP2 (bare ``fully_shard``): per-rank optimizer state against its bound, and the
bytes all-gathered and reduce-scattered per optimizer step, LISA against a full FSDP2 fine-tune.

    torchrun --nproc_per_node 2 benchmarks/fsdp2_traffic.py                      # CPU, gloo
    torchrun --nproc_per_node 1 benchmarks/fsdp2_traffic.py --backend nccl \\
        --hidden 1024 --intermediate 2816 --layers 16 --vocab 32000 --seq 512   # one GPU, + CUDA peak
    torchrun --nproc_per_node 2 benchmarks/fsdp2_traffic.py --checks OUT_DIR     # what the tests read

A tiny random Llama is sharded one ``fully_shard`` unit per decoder layer plus the root, and
trained with AdamW, gradient accumulation and clipping; ``LISACallback`` is driven through the
trainer events a ``Trainer`` would send. Bytes are counted by wrapping FSDP2's collectives
(``dist.all_gather_single``, ``dist.reduce_scatter_single``): the size of the unsharded
payload of each call (all-gather output, reduce-scatter input); a ring moves (N-1)/N of it
per rank. ``--checks`` adds what ``tests/lisa_plugin/test_fsdp2.py`` checks: resume from
sharded checkpoints, tied embeddings with mixed precision, ranks with different seeds.
Needs torch and transformers (for the Llama), not Axolotl.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lisa_plugin import LISACallback  # noqa: E402
from lisa_plugin.core import distributed  # noqa: E402
from lisa_plugin.core.optimizer_state import adamw_state_bound_per_rank, state_bytes  # noqa: E402


@dataclass(frozen=True)
class Spec:
    layers: int = 4
    hidden: int = 32
    intermediate: int = 64
    vocab: int = 128
    seq: int = 16
    batch: int = 2  # sequences per rank and micro-batch
    accumulation: int = 2
    steps: int = 6
    gamma: int = 1
    interval: int = 2
    strategy: str = "uniform"
    lr: float = 1e-3
    clip: float = 0.5
    tied: bool = False
    mixed_precision: bool = False
    seed: int = 5  # LISA's seed (every rank the same, unless a check says otherwise)


def tiny_llama(spec: Spec, seed: int = 0, device="cpu"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=spec.vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=max(64, spec.seq), tie_word_embeddings=spec.tied,
    )
    return LlamaForCausalLM(config).to(device)


def micro_batch(spec: Spec, step: int, micro: int, rank: int, world: int, device="cpu") -> torch.Tensor:
    """This rank's rows of the global micro-batch (``batch * world`` sequences, the same on every world size)."""
    g = torch.Generator().manual_seed(1000 * step + micro)
    rows = torch.randint(5, spec.vocab, (spec.batch * world, spec.seq), generator=g)
    return rows[rank * spec.batch:(rank + 1) * spec.batch].to(device)


class CollectiveBytes:
    """Wraps FSDP2's all-gather and reduce-scatter entry points; counts their unsharded payload."""

    def __init__(self) -> None:
        self.all_gather = 0
        self.reduce_scatter = 0
        self._originals = (dist.all_gather_single, dist.reduce_scatter_single)

    def __enter__(self) -> "CollectiveBytes":
        gather, scatter = self._originals

        def all_gather_single(output, input, *args, **kwargs):
            self.all_gather += output.numel() * output.element_size()
            return gather(output, input, *args, **kwargs)

        def reduce_scatter_single(output, input, *args, **kwargs):
            self.reduce_scatter += input.numel() * input.element_size()
            return scatter(output, input, *args, **kwargs)

        dist.all_gather_single, dist.reduce_scatter_single = all_gather_single, reduce_scatter_single
        return self

    def __exit__(self, *exc) -> None:
        dist.all_gather_single, dist.reduce_scatter_single = self._originals

    def mark(self) -> tuple[int, int]:
        return self.all_gather, self.reduce_scatter


def shard(model, spec: Spec):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    kwargs = {}
    if spec.mixed_precision:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return distributed.shard_for_lisa(model, model.model.layers, **kwargs)


class Events:
    """The trainer events ``LISACallback`` listens to, sent the way a transformers Trainer sends them."""

    def __init__(self, callback, spec: Spec, out: Path | None, world: int, start: int = 0, saved=None):
        from transformers import TrainerControl, TrainerState

        self.callback = callback
        fsdp = dict(fsdp=True, fsdp_config={"version": 2}) if world > 1 or dist.is_initialized() else {}
        self.args = SimpleNamespace(
            seed=spec.seed, deepspeed=None, world_size=world, parallel_mode=None, gradient_checkpointing=False,
            gradient_checkpointing_kwargs=None, output_dir=str(out or "."), **fsdp,
        )
        self.state = TrainerState(max_steps=spec.steps, global_step=start, stateful_callbacks=saved or {})
        # The callback writes lisa_history.json into output_dir from "process zero": only when asked to.
        self.state.is_world_process_zero = out is not None and (not dist.is_initialized() or dist.get_rank() == 0)
        self.control = TrainerControl()

    def train_begin(self, model, optimizer) -> None:
        self.callback.on_train_begin(self.args, self.state, self.control, model=model, optimizer=optimizer)

    def pre_optimizer_step(self) -> None:
        self.callback.on_pre_optimizer_step(self.args, self.state, self.control)

    def step_end(self, optimizer) -> None:
        self.state.global_step += 1
        self.callback.on_step_end(self.args, self.state, self.control, optimizer=optimizer)


def local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def one_step(model, optimizer, spec: Spec, step: int, rank: int, world: int, events=None) -> int:
    """One optimizer step: ``accumulation`` micro-batches (gradients reduced on the last), clip, AdamW.

    Returns this rank's optimizer-state bytes after the update, before LISA switches layers.
    """
    device = next(model.parameters()).device
    for micro in range(spec.accumulation):
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(micro == spec.accumulation - 1)
        ids = micro_batch(spec, step, micro, rank, world, device)
        (model(input_ids=ids, labels=ids).loss / spec.accumulation).backward()
    with_grad = [p for p in model.parameters() if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(with_grad, spec.clip)
    if events is not None:
        events.pre_optimizer_step()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    held = state_bytes(optimizer)
    if events is not None:
        events.step_end(optimizer)
    return held


def train(model, spec: Spec, lisa: bool, *, rank=0, world=1, out=None, start=0, saved=None,
          save_at=(), resume_from=None) -> dict:
    """Train steps ``start``..``spec.steps``; return per-step records (bytes, state, changed params)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.1, eps=1e-4)
    callback = events = None
    if lisa:
        callback = LISACallback(n_layers=spec.gamma, interval_steps=spec.interval, strategy=spec.strategy)
        events = Events(callback, spec, out, world, start, saved)
        events.train_begin(model, optimizer)
    if resume_from is not None:
        distributed.load_sharded_checkpoint(resume_from, model, optimizer)
    steps = []
    with CollectiveBytes() as counted:
        for step in range(start, spec.steps):
            before, marks = {n: local(p).detach().clone() for n, p in model.named_parameters()}, counted.mark()
            trainable = [p for p in model.parameters() if p.requires_grad]
            active = list(callback.switcher.active) if lisa else None
            held = one_step(model, optimizer, spec, step, rank, world, events)
            steps.append(dict(
                step=step, active=active, all_gather_bytes=counted.all_gather - marks[0],
                reduce_scatter_bytes=counted.reduce_scatter - marks[1], state_bytes=held,
                state_bound=adamw_state_bound_per_rank(trainable, world),
                changed=sorted(n for n, p in model.named_parameters() if not torch.equal(local(p), before[n])),
            ))
            if step + 1 in save_at:
                save_checkpoint(out / f"checkpoint-{step + 1}", model, optimizer, callback)
    return dict(steps=steps, switches=callback.switcher.history.switches if lisa else [], optimizer=optimizer)


def save_checkpoint(path: Path, model, optimizer, callback) -> None:
    distributed.save_sharded_checkpoint(path, model, optimizer)
    if dist.get_rank() == 0:
        (path / "lisa_callback.json").write_text(json.dumps({type(callback).__name__: callback.state()}))
    dist.barrier()


def full_weights(model) -> dict[str, torch.Tensor]:
    """Every parameter whole (an all-gather of each shard), on CPU, in float32."""
    out = {}
    for name, p in model.named_parameters():
        whole = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name] = whole.detach().float().cpu()
    return out


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def optimizer_digest(optimizer) -> str:
    """Digest of this rank's optimizer shards (keyed by parameter index)."""
    index = {id(p): i for i, p in enumerate(optimizer.param_groups[0]["params"])}
    flat = {f"{index[id(p)]}.{k}": local(v).detach().float().cpu() for p, s in optimizer.state.items() for k, v in s.items()}
    return digest(flat)


def group_bytes(model) -> dict[str, int]:
    """Global bytes (fp32) of E, H (final norm, and the head unless tied), one decoder layer, the model."""
    size = lambda params: sum(p.numel() * p.element_size() for p in params)  # noqa: E731
    head = [model.model.norm.weight] + ([] if model.config.tie_word_embeddings else [model.lm_head.weight])
    return dict(embeddings=size([model.model.embed_tokens.weight]), head=size(head),
                layer=size(model.model.layers[0].parameters()), model=size(model.parameters()))


def run(name: str, spec: Spec, lisa: bool, rank: int, world: int, device, out: Path | None, **kwargs) -> dict:
    """One sharded run; every rank builds the same initial weights (``model_seed``) and keeps its shards."""
    model = tiny_llama(spec, seed=kwargs.pop("model_seed", 0), device=device)
    groups = group_bytes(model)
    shard(model, spec)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = train(model, spec, lisa, rank=rank, world=world, out=out, **kwargs)
    weights = full_weights(model)
    record = dict(
        name=name, spec=asdict(spec), world=world, rank=rank, groups=groups, steps=result["steps"],
        switches=result["switches"], digest=digest(weights), optimizer_digest=optimizer_digest(result["optimizer"]),
        cuda_peak_bytes=torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
    )
    if out is not None:
        (out / f"{name}-rank{rank}.json").write_text(json.dumps(record))
        if rank == 0:
            torch.save(weights, out / f"{name}-weights.pt")
    return record


def checks(spec: Spec, rank: int, world: int, device, out: Path) -> None:
    """Everything the tests read, in one launch: the runs, two resumes, a mixed-precision tied run, bad seeds."""
    run("lisa", spec, True, rank, world, device, out, save_at=(3, 4))
    run("full", spec, False, rank, world, device, out)
    for at in (3, 4):  # mid-interval, and at a switch (new layers without state yet)
        saved = json.loads((out / f"checkpoint-{at}" / "lisa_callback.json").read_text())
        run(f"resume-{at}", spec, True, rank, world, device, out, model_seed=99, start=at, saved=saved,
            resume_from=out / f"checkpoint-{at}")
    mixed = replace(spec, tied=True, mixed_precision=True, strategy="adaptive", gamma=2)
    run("tied-mixed-adaptive", mixed, True, rank, world, device, out)
    try:
        run("different-seeds", replace(spec, seed=spec.seed + rank), True, rank, world, device, None)
        error = None
    except RuntimeError as exc:
        error = str(exc)
    (out / f"different-seeds-rank{rank}.json").write_text(json.dumps({"error": error}))


def report(record: dict, full: dict | None) -> str:
    lines = [f"world size {record['world']}, rank {record['rank']}; model {record['groups']['model']:,} bytes (fp32)"]
    for r in (record, full):
        if r is None:
            continue
        steps = r["steps"]
        peak = max(s["state_bytes"] for s in steps)
        bound = max(s["state_bound"] for s in steps)
        lines.append(
            f"{r['name']:>5}: all-gathered {max(s['all_gather_bytes'] for s in steps):,} B/step, reduce-scattered "
            f"{max(s['reduce_scatter_bytes'] for s in steps):,} B/step; optimizer state {peak:,} B on this rank "
            f"(bound/world {bound:,} B, {peak / bound:.4f}x)"
            + (f"; CUDA peak {r['cuda_peak_bytes'] / 2**20:,.1f} MiB" if r["cuda_peak_bytes"] else "")
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    parser.add_argument("--checks", type=Path, help="run every check scenario and write JSON here (tests)")
    for field, default in asdict(Spec()).items():
        if isinstance(default, bool):
            parser.add_argument(f"--{field.replace('_', '-')}", action="store_true")
        else:
            parser.add_argument(f"--{field}", type=type(default), default=default)
    args = parser.parse_args(argv)
    spec = Spec(**{k: getattr(args, k) for k in asdict(Spec())})
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cpu")
    if args.backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    try:
        if args.checks is not None:
            args.checks.mkdir(parents=True, exist_ok=True)
            checks(spec, rank, world, device, args.checks)
        else:
            lisa = run("lisa", spec, True, rank, world, device, None)
            full = run("full", spec, False, rank, world, device, None)
            print(report(lisa, full), flush=True)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
