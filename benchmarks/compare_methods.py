"""Memory and speed of LISA vs LoRA vs full fine-tuning, side by side, one fresh process per method.

    python benchmarks/compare_methods.py [--shape llama2|llama3] [--hidden 512] [--layers 24] [--vocab 32000]
        [--seq 128] [--batch 2] [--steps 60] [--gamma 2] [--interval 5] [--rank 16] [--proj-rank 64]
        [--lr 1e-4] [--methods full,lora,...] [--out runs/bench-compare]

Every method trains the same random-init Llama-layout model (same seed, data, batch, sequence
length and dtype) with a plain ``transformers.Trainer`` and ``adamw_torch``, in its own
subprocess so that the peak RSS of one cannot leak into another. Methods:

* ``full``: full fine-tuning;
* ``lora``: peft LoRA of rank ``--rank`` on all linear layers of the decoder (``all-linear``);
* ``axolotl-lisa``: Axolotl's built-in callback (``lisa_callback_factory``) on a plain Trainer
  whose ``args`` carry ``lisa_n_layers`` / ``lisa_step_interval`` / ``lisa_layers_attribute``;
* ``ours-release`` / ``ours-keep``: ``LISACallback`` with ``optimizer_state`` release / keep;
* ``ours-frozen-eh``: ``LISACallback`` with ``train_embeddings: false, train_head: false``;
* ``ours-frozen-eh-inputgrads``: the same after ``model.enable_input_require_grads()``, which
  forces backward through every layer (what reentrant gradient checkpointing needs).
* ``badam`` / ``galore`` / ``apollo`` (``pip install 'lisa-axolotl[bench]'``): BAdam's ``BlockOptimizer``
  (a block per decoder layer, E and H frozen), ``GaLoreAdamW`` and ``APOLLOAdamW`` (rank ``--proj-rank``
  on the decoder layers' linear weights, plain AdamW for the rest), each built through its package's API;
* ``ours-eh-8bit`` (``eh_state: 8bit``, ``adamw_bnb_8bit``) and ``ours-bf16-master`` (``master_weights:
  fp32`` on a bf16 model): in the defaults when the installed ``LisaConfig`` has the key.

``--shape llama3`` has Llama-3-8B's vocabulary / hidden ratio (16032 / 512) and GQA; ``llama2`` (default)
is the shape above.

Per method it records: peak RSS of the process, bytes of parameters / gradients / optimizer state
(summed over tensors) at the optimizer step where their sum peaks, trainable parameters, the median
step time after warm-up (wall clock between step starts on CPU; CUDA events on a GPU, where
``torch.cuda.max_memory_allocated`` is reported too) and, for LISA, the time spent in the switching
callback as a share of the K-step period; also master copies (BAdam's, ours with fp32 masters) and
the loss over the last steps. Writes ``results.json``, ``results.md`` and
``results.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# Rows of other optimizers (the `bench` extra installs them): their PyPI package, for the message.
OTHER_OPTIMIZERS = {"badam": "badam", "galore": "galore-torch", "apollo": "apollo-torch"}
BASE_METHODS = (
    "full",
    "lora",
    "axolotl-lisa",
    "ours-release",
    "ours-keep",
    "ours-frozen-eh",
    "ours-frozen-eh-inputgrads",
)
# Rows for the options of the `lisa:` block, each shown only when the installed LisaConfig has the key.
OPTION_METHODS = {"ours-eh-8bit": "eh_state", "ours-bf16-master": "master_weights"}
ALL_METHODS = BASE_METHODS + tuple(OTHER_OPTIMIZERS) + tuple(OPTION_METHODS)
# Model shapes: Llama-2-7B's vocabulary / hidden ratio (32000 / 4096) and Llama-3-8B's (128256 / 4096
# = 31.3, here 16032 / 512), untied E and H, scaled down to fit a CPU machine.
SHAPES = {
    "llama2": {"hidden": 512, "layers": 24, "vocab": 32000, "heads": 8, "kv_heads": 8, "intermediate": 1376},
    "llama3": {"hidden": 512, "layers": 16, "vocab": 16032, "heads": 8, "kv_heads": 2, "intermediate": 1792},
}
WARMUP_STEPS = 3
LOSS_TAIL = 5  # the loss after N steps: mean over the last LOSS_TAIL steps


# -- the child process: one method ---------------------------------------------------------


def build_model(spec: dict, dtype: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=spec["vocab"],
        hidden_size=spec["hidden"],
        intermediate_size=spec["intermediate"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        num_key_value_heads=spec.get("kv_heads", spec["heads"]),
        max_position_embeddings=max(spec["seq"], 128),
        tie_word_embeddings=False,
    )
    torch.manual_seed(spec["seed"])
    return AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype or spec["dtype"]))


class RandomTokens:
    """``n`` sequences of token ids, the same for every method (seeded): ``distinct`` random ones
    repeated in turn (all distinct when ``distinct`` is 0), so the loss after N steps shows how far
    each method got in memorising them."""

    def __init__(self, n: int, seq: int, vocab: int, seed: int, distinct: int = 0) -> None:
        import torch

        gen = torch.Generator().manual_seed(seed)
        pool = torch.randint(0, vocab, (distinct or n, seq), generator=gen)
        self.ids = pool[torch.arange(n) % len(pool)]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def optimizer_tensor_bytes(optimizer) -> tuple[int, int]:
    """(optimizer state, master copies) in bytes, each distinct tensor once.

    State is every tensor in ``optimizer.state``, also those inside objects kept there (the
    projection matrices of GaLore's and APOLLO's projectors). BAdam's ``BlockOptimizer`` keeps its
    state in ``base_optimizer`` and float32 copies of the active block (``param_idx2hp``): masters.
    """
    from lisa_plugin.core.optimizer_state import tensor_bytes, unwrap_optimizer

    inner = unwrap_optimizer(optimizer)
    masters = list(getattr(inner, "param_idx2hp", {}).values())
    inner = getattr(inner, "base_optimizer", inner)
    values = []
    for entry in inner.state.values():
        for value in entry.values():
            values.append(vars(value) if hasattr(value, "__dict__") and not hasattr(value, "data_ptr") else value)
    return tensor_bytes(values), tensor_bytes(masters)


def make_probe(cuda: bool):
    import torch
    from transformers import TrainerCallback

    from lisa_plugin.core.optimizer_state import tensor_bytes

    class Probe(TrainerCallback):
        """Step-start times, gradient bytes before each optimizer step (BAdam drops the model's
        gradients inside its step) and, after it, parameter, optimizer-state and master bytes."""

        def __init__(self) -> None:
            self.starts: list = []
            self.records: list[dict] = []
            self.lowest_active: list[int | None] = []
            self.switcher = None
            self.grads = 0
            self.losses: list = []  # detached loss tensors, read once at the end (no sync per step)

        def on_step_begin(self, args, state, control, **kwargs):
            if cuda:
                event = torch.cuda.Event(enable_timing=True)
                event.record()
                self.starts.append(event)
            else:
                self.starts.append(time.perf_counter())
            active = self.switcher.active if self.switcher is not None and self.switcher.active else None
            self.lowest_active.append(min(active) if active else None)

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.grads = tensor_bytes([p.grad for p in model.parameters()])  # None counts 0

        def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
            opt_bytes, master_bytes = optimizer_tensor_bytes(optimizer)
            masters = getattr(self.switcher, "masters", None)  # ours with lisa.master_weights: fp32
            master_bytes += masters.master_bytes() if masters is not None else 0
            self.records.append({"params": tensor_bytes(list(model.parameters())), "grads": self.grads,
                                 "optimizer": opt_bytes, "masters": master_bytes})

        def on_train_end(self, args, state, control, **kwargs):
            self.on_step_begin(args, state, control)  # closes the last step

        def step_seconds(self) -> list[float]:
            if cuda:
                torch.cuda.synchronize()
                return [a.elapsed_time(b) / 1000 for a, b in zip(self.starts, self.starts[1:])]
            return [b - a for a, b in zip(self.starts, self.starts[1:])]

        def record_losses(self, trainer) -> None:
            inner = trainer.compute_loss

            def compute_loss(*a, **k):
                out = inner(*a, **k)
                self.losses.append((out[0] if isinstance(out, tuple) else out).detach())
                return out

            trainer.compute_loss = compute_loss

    return Probe()


def timed(callback, event: str, sink: list[float], cuda: bool) -> None:
    """Wrap ``callback.<event>`` so that the seconds it takes are appended to ``sink``."""
    import torch

    inner = getattr(callback, event)

    def wrapper(*args, **kwargs):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = inner(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        sink.append(time.perf_counter() - start)
        return out

    setattr(callback, event, wrapper)


def run_method(method: str, spec: dict) -> dict:
    import torch
    from transformers import Trainer

    cuda = torch.cuda.is_available()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    # A bf16 model with float32 masters is the point of that row; every other row uses --dtype.
    model = build_model(spec, "bfloat16" if method == "ours-bf16-master" else None)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=spec["rank"], lora_alpha=2 * spec["rank"], lora_dropout=0.0, target_modules="all-linear")
        )
    if method == "ours-frozen-eh-inputgrads":
        model.enable_input_require_grads()
    args = training_args(spec, cuda, "adamw_bnb_8bit" if method == "ours-eh-8bit" else "adamw_torch")
    data = RandomTokens(spec["steps"] * spec["batch"], spec["seq"], spec["vocab"], spec["seed"], spec.get("distinct", 0))
    trainer = Trainer(model=model, args=args, train_dataset=data, optimizers=(other_optimizer(method, model, spec), None))
    probe = make_probe(cuda)
    trainer.add_callback(probe)
    probe.record_losses(trainer)
    switch_seconds: list[float] = []
    callback = attach_lisa(method, spec, trainer, probe, switch_seconds, cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    result = measured(method, spec, model, trainer, probe, cuda)
    if method.startswith("ours"):
        result.update(lisa_bounds(method, callback.switcher, model, probe, spec, len(result["step_seconds"])))
    if method in ("axolotl-lisa",) or method.startswith("ours"):
        switches = result.get("switches", -(-spec["steps"] // spec["interval"]))
        # on_step_begin of Axolotl's callback runs every step; only the switching calls cost.
        result["switch_seconds_total"] = sum(sorted(switch_seconds)[-switches:]) if switch_seconds else 0.0
        result["switch_share_of_period"] = result["switch_seconds_total"] / (
            switches * spec["interval"] * result["median_step_seconds"]
        )
        if method == "axolotl-lisa":
            result["switches"] = switches
    return result


def low_rank_split(model) -> tuple[list, list]:
    """(2-D weights of the decoder layers' linear layers, every other parameter): GaLore's and
    APOLLO's recipe projects the former and trains the latter with plain AdamW."""
    from torch import nn

    projected = [m.weight for layer in model.model.layers for m in layer.modules() if isinstance(m, nn.Linear)]
    ids = {id(p) for p in projected}
    return projected, [p for p in model.parameters() if id(p) not in ids]


def other_optimizer(method: str, model, spec: dict):
    """The optimizer of a BAdam / GaLore / APOLLO row, built through each package's own API; None
    for the other rows (the Trainer builds ``--optim``). Same learning rate, betas, eps and no
    weight decay, like the Trainer's AdamW."""
    import torch

    common = {"lr": spec.get("lr", 1e-4), "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    if method not in OTHER_OPTIMIZERS:
        return None
    if method == "badam":
        from badam import BlockOptimizer

        # One block per decoder layer (BAdam infers them from the names), E and H frozen: its defaults.
        return BlockOptimizer(torch.optim.AdamW(model.parameters(), **common), list(model.named_parameters()),
                              switch_block_every=spec["interval"], switch_mode="random", verbose=0)
    projected, plain = low_rank_split(model)
    low_rank = {"params": projected, "rank": spec["proj_rank"], "update_proj_gap": 200, "proj_type": "std"}
    if method == "galore":
        from galore_torch import GaLoreAdamW

        return GaLoreAdamW([{"params": plain}, {**low_rank, "scale": 0.25}], no_deprecation_warning=True, **common)
    from apollo_torch import APOLLOAdamW

    return APOLLOAdamW([{"params": plain}, {**low_rank, "proj": "random", "scale_type": "channel", "scale": 1.0}],
                       **common)


def training_args(spec: dict, cuda: bool, optim: str = "adamw_torch"):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=spec["out"],
        per_device_train_batch_size=spec["batch"],
        max_steps=spec["steps"],
        learning_rate=spec.get("lr", 1e-4),
        optim=optim,
        lr_scheduler_type="constant",
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        seed=spec["seed"],
        dataloader_num_workers=0,
        disable_tqdm=True,
        gradient_checkpointing=spec["gradient_checkpointing"],
        gradient_checkpointing_kwargs={"use_reentrant": False} if spec["gradient_checkpointing"] else None,
        bf16=spec["dtype"] == "bfloat16" and cuda,
        use_cpu=not cuda,
    )


def attach_lisa(method: str, spec: dict, trainer, probe, switch_seconds: list[float], cuda: bool):
    """The LISA callback of ``method`` (Axolotl's built-in or ours) on ``trainer``, its switches timed."""
    lisa = {"n_layers": spec["gamma"], "interval_steps": spec["interval"], "seed": spec["seed"]}
    if method == "axolotl-lisa":
        from axolotl.utils.callbacks.lisa import lisa_callback_factory

        args = trainer.args
        args.lisa_n_layers, args.lisa_step_interval = spec["gamma"], spec["interval"]
        args.lisa_layers_attribute = "model.layers"
        callback = lisa_callback_factory(trainer)
        timed(callback, "on_step_begin", switch_seconds, cuda)
        trainer.add_callback(callback)
        return callback
    if not method.startswith("ours"):
        return None
    from lisa_plugin import LISACallback

    if method == "ours-keep":
        lisa["optimizer_state"] = "keep"
    if method.startswith("ours-frozen-eh"):
        lisa.update(train_embeddings=False, train_head=False)
    if method == "ours-eh-8bit":
        lisa["eh_state"] = "8bit"
    if method == "ours-bf16-master":
        lisa["master_weights"] = "fp32"
    callback = LISACallback(**lisa).attach(trainer)
    timed(callback, "on_train_begin", switch_seconds, cuda)
    timed(callback, "on_step_end", switch_seconds, cuda)
    begin = callback.on_train_begin

    def remember_switcher(*a, **k):
        out = begin(*a, **k)
        probe.switcher = callback.switcher
        return out

    callback.on_train_begin = remember_switcher
    return callback


def measured(method: str, spec: dict, model, trainer, probe, cuda: bool) -> dict:
    import torch

    steps = probe.step_seconds()
    timed_steps = steps[WARMUP_STEPS:] or steps
    peak = max(probe.records, key=lambda r: r["params"] + r["grads"] + r["optimizer"] + r["masters"])
    losses = [float(loss) for loss in probe.losses]
    return {
        "method": method,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "param_bytes": peak["params"],
        "grad_bytes": peak["grads"],
        "optimizer_bytes": peak["optimizer"],
        "master_bytes": peak["masters"],
        "losses": losses,
        "final_loss": statistics.mean(losses[-LOSS_TAIL:]),
        "peak_optimizer_bytes": max(r["optimizer"] for r in probe.records),
        "peak_master_bytes": max(r["masters"] for r in probe.records),
        "final_optimizer_bytes": probe.records[-1]["optimizer"],
        "trainable_params": max(
            sum(p.numel() for p in model.parameters() if p.requires_grad),
            sum(p.numel() for p in trainer.optimizer.param_groups[0]["params"] if p.requires_grad),
        ),
        "total_params": sum(p.numel() for p in model.parameters()),
        "step_seconds": steps,
        "median_step_seconds": statistics.median(timed_steps),
        "cuda_max_memory_allocated": torch.cuda.max_memory_allocated() if cuda else None,
        "timer": "cuda-events" if cuda else "perf_counter",
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch_threads": torch.get_num_threads(),
        "spec": {k: v for k, v in spec.items() if k != "out"},
    }


def lisa_bounds(method: str, switcher, model, probe, spec: dict, num_steps: int) -> dict:
    """Our runs: the trainable set of an interval, the switches, and AdamW's E+H+gamma bound
    (for ``ours-eh-8bit`` bitsandbytes' layout: E and H in 8 bits, layers in 32)."""
    from lisa_plugin.core.optimizer_state import adamw_state_bound

    eh = switcher.partition.always_trainable(True, True)
    layer = max(switcher.partition.layers, key=lambda g: sum(p.numel() for p in g))
    bound = adamw_state_bound(eh + layer * spec["gamma"])
    if method == "ours-eh-8bit":  # sizes, not tensors: the bound counts one tensor once, and gamma layers differ
        from lisa_plugin.core.eh_state import bnb_state_bytes

        bound = bnb_state_bytes([p.numel() for p in eh], [p.numel() for p in layer] * spec["gamma"])
    if method == "ours-bf16-master":  # masters + fp32 moments: compared with state + masters
        from lisa_plugin.core.master_weights import master_state_bound

        bound = master_state_bound(eh + layer * spec["gamma"])
    return {
        # Trainable parameters of a LISA interval: E/H plus gamma layers (the requires_grad set now).
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "switches": len(switcher.history.switches),
        "lowest_active_per_step": probe.lowest_active[:num_steps],
        "adamw_bound_eh_gamma_bytes": bound,
        "adamw_bound_gamma_bytes": adamw_state_bound(layer * spec["gamma"]),
    }


# -- the parent process: all methods, the report ---------------------------------------------


def spec_from_args(args: argparse.Namespace) -> dict:
    shape = SHAPES[args.shape]
    hidden = args.hidden or shape["hidden"]
    heads = args.heads or (shape["heads"] if hidden == shape["hidden"] else max(1, hidden // 64))
    kv_heads = shape["kv_heads"] * heads // shape["heads"] or 1
    if hidden % heads or heads % kv_heads:
        raise SystemExit(f"--hidden {hidden} is not divisible by --heads {heads}; expected a multiple")
    return {
        "shape": args.shape,
        "hidden": hidden,
        "layers": args.layers or shape["layers"],
        "vocab": args.vocab or shape["vocab"],
        "heads": heads,
        "kv_heads": kv_heads,
        # the shape's intermediate / hidden ratio (LLaMA-2's 11008 / 4096), rounded to a multiple of 8.
        "intermediate": args.intermediate or int(round(hidden * shape["intermediate"] / shape["hidden"] / 8) * 8),
        "seq": args.seq,
        "batch": args.batch,
        "steps": args.steps,
        "gamma": args.gamma,
        "interval": args.interval,
        "rank": args.rank,
        "proj_rank": args.proj_rank,
        "distinct": args.distinct,
        "lr": args.lr,
        "dtype": args.dtype,
        "seed": args.seed,
        "gradient_checkpointing": args.gradient_checkpointing,
        "threads": args.threads,
    }


def default_methods() -> list[str]:
    """Every row this installation can run: the other optimizers when their packages are installed,
    the rows of `lisa:` options when the installed ``LisaConfig`` has their key."""
    from importlib.util import find_spec

    from lisa_plugin.config import LisaConfig

    others = [m for m in OTHER_OPTIMIZERS if find_spec(OTHER_OPTIMIZERS[m].replace("-", "_")) is not None]
    options = [m for m, key in OPTION_METHODS.items() if key in LisaConfig.model_fields]
    return list(BASE_METHODS) + others + options


def check_methods(methods: list[str]) -> None:
    from importlib.util import find_spec

    from lisa_plugin.config import LisaConfig

    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise SystemExit(f"--methods: unknown method(s) {', '.join(unknown)}; expected any of {', '.join(ALL_METHODS)}")
    missing = [OTHER_OPTIMIZERS[m] for m in methods if m in OTHER_OPTIMIZERS
               and find_spec(OTHER_OPTIMIZERS[m].replace("-", "_")) is None]
    if missing:
        raise SystemExit(f"--methods: {', '.join(missing)} not installed; pip install 'lisa-axolotl[bench]' "
                         "(or the package itself)")
    absent = [f"{m} (lisa.{OPTION_METHODS[m]})" for m in methods
              if m in OPTION_METHODS and OPTION_METHODS[m] not in LisaConfig.model_fields]
    if absent:
        raise SystemExit(f"--methods: {', '.join(absent)}: this lisa_plugin's LisaConfig has no such key")


def run_child(method: str, spec: dict, out: Path, reuse: bool = False) -> dict:
    result_path = out / f"{method}.json"
    if reuse and result_path.exists():
        saved = json.loads(result_path.read_text())
        if saved.get("spec", spec) == spec:
            print(f"[{method}] reusing {result_path}", flush=True)
            return saved
        print(f"[{method}] {result_path} was measured with other settings; running again", flush=True)
    spec = {**spec, "out": str(out / method)}
    result_path.unlink(missing_ok=True)
    threads = {"OMP_NUM_THREADS": str(spec["threads"])} if spec.get("threads") else {}
    env = {**os.environ, **threads, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "AXOLOTL_DO_NOT_TRACK": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--child-spec", json.dumps(spec),
           "--child-result", str(result_path)]
    print(f"[{method}] running ...", flush=True)
    with open(out / f"{method}.log", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = (out / f"{method}.log").read_text()[-3000:]
        raise RuntimeError(f"method {method!r} failed (exit {proc.returncode}); see {out / method}.log:\n{tail}")
    result = json.loads(result_path.read_text())
    print(f"[{method}] peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MB, "
          f"median step {result['median_step_seconds']:.3f} s", flush=True)
    return result


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def lowest_layer_effect(result: dict, layers: int) -> dict | None:
    """Median step time when the lowest active layer is in the bottom vs the top half."""
    lows = result.get("lowest_active_per_step") or []
    steps = result["step_seconds"]
    pairs = [(low, t) for i, (low, t) in enumerate(zip(lows, steps)) if i >= WARMUP_STEPS and low is not None]
    bottom = [t for low, t in pairs if low < layers // 2]
    top = [t for low, t in pairs if low >= layers // 2]
    if not bottom or not top:
        return None
    return {"bottom_half_median_s": statistics.median(bottom), "top_half_median_s": statistics.median(top),
            "bottom_steps": len(bottom), "top_steps": len(top)}


def check_targets(results: dict[str, dict], spec: dict) -> list[dict]:
    """The issue's targets, each as a ratio from this one run."""
    targets = []

    def add(name, value, limit, detail):
        targets.append({"target": name, "value": value, "limit": limit,
                        "met": None if value is None else value <= limit, "detail": detail})

    r = results
    if "ours-release" in r:
        rel = r["ours-release"]
        add("ours-release optimizer state / AdamW bound (E+H+gamma)",
            rel["peak_optimizer_bytes"] / rel["adamw_bound_eh_gamma_bytes"], 1.02,
            f"{rel['switches']} switches")
        if "axolotl-lisa" in r:
            add("ours-release peak RSS / axolotl-lisa peak RSS",
                rel["peak_rss_bytes"] / r["axolotl-lisa"]["peak_rss_bytes"], 1.0, "must be below 1")
        if "full" in r:
            add("ours-release peak RSS / full peak RSS", rel["peak_rss_bytes"] / r["full"]["peak_rss_bytes"], 1.0,
                "must be below 1")
            add("ours-release median step / full median step",
                rel["median_step_seconds"] / r["full"]["median_step_seconds"], 0.8, "")
        add("ours-release switching time / K-step period", rel["switch_share_of_period"], 0.02, "")
    if "ours-frozen-eh" in r and "lora" in r:
        add(f"ours-frozen-eh peak RSS / lora (r={spec['rank']}) peak RSS",
            r["ours-frozen-eh"]["peak_rss_bytes"] / r["lora"]["peak_rss_bytes"], 1.0, "")
    if "ours-frozen-eh" in r and "ours-frozen-eh-inputgrads" in r:
        add("ours-frozen-eh median step / same with enable_input_require_grads",
            r["ours-frozen-eh"]["median_step_seconds"] / r["ours-frozen-eh-inputgrads"]["median_step_seconds"],
            1.0, "backward stops at the lowest active layer only without input grads")
    option_targets(r, spec, add)
    return targets


def state_over_bound(r: dict) -> float:
    """Peak optimizer state over the row's analytic bound (with the masters for ``ours-bf16-master``,
    whose bound counts them)."""
    masters = r.get("peak_master_bytes", 0) if r["method"] == "ours-bf16-master" else 0
    frozen_eh = r["method"].startswith("ours-frozen-eh")  # E and H hold no state: gamma layers only
    return (r["peak_optimizer_bytes"] + masters) / r["adamw_bound_gamma_bytes" if frozen_eh else "adamw_bound_eh_gamma_bytes"]


# LISA rows that train E and H (what the issue compares with LoRA) and that release state (bounded).
EH_TRAINABLE_ROWS = ("ours-release", "ours-eh-8bit", "ours-bf16-master")


def option_targets(r: dict[str, dict], spec: dict, add) -> None:
    """The targets of the options and the other optimizers' rows: each released LISA variant's
    state within 1.02x its bound, and the best E/H-trainable variant against LoRA."""
    for name in EH_TRAINABLE_ROWS[1:]:
        if name in r and r[name].get("adamw_bound_eh_gamma_bytes"):
            add(f"{name} optimizer state / its analytic bound", state_over_bound(r[name]), 1.02,
                f"{r[name]['switches']} switches")
    rows = [n for n in EH_TRAINABLE_ROWS if n in r]
    if rows and "lora" in r:
        best = min(rows, key=lambda n: r[n]["peak_rss_bytes"])
        add(f"best E/H-trainable LISA ({best}) peak RSS / lora (r={spec['rank']}) peak RSS",
            r[best]["peak_rss_bytes"] / r["lora"]["peak_rss_bytes"], 1.0, "")
        fastest = min(rows, key=lambda n: r[n]["median_step_seconds"])
        add(f"fastest E/H-trainable LISA ({fastest}) median step / lora median step",
            r[fastest]["median_step_seconds"] / r["lora"]["median_step_seconds"], 1.0, "")


def _main_table(results: dict[str, dict], spec: dict) -> list[str]:
    lines = [
        "| method | peak RSS (MB) | params (MB) | grads (MB) | optimizer state (MB) | masters (MB) | state / bound | "
        f"trainable params | median step (s) | loss, last {LOSS_TAIL} of {spec['steps']} steps | "
        "switching / K-step period | CUDA max allocated (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        share = f"{100 * r['switch_share_of_period']:.2f}%" if "switch_share_of_period" in r else "-"
        ratio = f"{state_over_bound(r):.3f}" if r.get("adamw_bound_eh_gamma_bytes") else "-"
        loss = f"{r['final_loss']:.3f}" if r.get("final_loss") is not None else "-"
        lines.append(
            f"| {name} | {_mb(r['peak_rss_bytes'])} | {_mb(r['param_bytes'])} | {_mb(r['grad_bytes'])} | "
            f"{_mb(r['peak_optimizer_bytes'])} | {_mb(r.get('master_bytes'))} | {ratio} | {r['trainable_params']:,} | "
            f"{r['median_step_seconds']:.3f} | {loss} | {share} | {_mb(r['cuda_max_memory_allocated'])} |"
        )
    return lines


def markdown(results: dict[str, dict], spec: dict, targets: list[dict], command: str) -> str:
    # the model's own parameters: a LoRA row's count includes its adapters
    model_params = min(r["total_params"] - (r["trainable_params"] if name == "lora" else 0) for name, r in results.items())
    any_result = next(iter(results.values()))
    lines = [
        f"Llama layout ({spec.get('shape', 'llama2')} shape), {model_params:,} parameters (vocab "
        f"{spec['vocab']}, hidden {spec['hidden']}, {spec['layers']} layers, {spec['heads']} heads / "
        f"{spec.get('kv_heads', spec['heads'])} KV heads, intermediate {spec['intermediate']}, untied), sequence "
        f"{spec['seq']}, batch {spec['batch']}, {spec['steps']} steps, {spec['dtype']}, adamw_torch (ours-eh-8bit: "
        f"adamw_bnb_8bit), lr {spec.get('lr', 1e-4)}, gamma={spec['gamma']}, K={spec['interval']}, LoRA r={spec['rank']}, "
        f"GaLore/APOLLO rank {spec.get('proj_rank')}, {spec.get('distinct') or 'all distinct'} random sequences, "
        f"gradient checkpointing {'on' if spec['gradient_checkpointing'] else 'off'}; "
        f"device {any_result['device']}, timer {any_result['timer']}, {any_result['torch_threads']} torch thread(s).",
        "",
        f"    {command}",
        "",
        *_main_table(results, spec),
    ]
    bound = next((r["adamw_bound_eh_gamma_bytes"] for n, r in results.items()
                  if "adamw_bound_eh_gamma_bytes" in r and n != "ours-eh-8bit"), None)
    if bound:
        lines += ["", f"Analytic AdamW state bound for E + H + {spec['gamma']} layers: {_mb(bound)} MB ({bound:,} bytes)"
                  + (" (ours-eh-8bit: bitsandbytes' layout, E and H in 8 bits)." if "ours-eh-8bit" in results else ".")]
    effects = [(n, lowest_layer_effect(r, spec["layers"])) for n, r in results.items()]
    effects = [(n, e) for n, e in effects if e]
    if effects:
        lines += ["", "Median step time by where the lowest active layer is (after warm-up):", "",
                  "| method | lowest active layer in bottom half (s) | in top half (s) | steps (bottom/top) |",
                  "|---|---|---|---|"]
        for n, e in effects:
            lines.append(f"| {n} | {e['bottom_half_median_s']:.3f} | {e['top_half_median_s']:.3f} | "
                         f"{e['bottom_steps']}/{e['top_steps']} |")
    if targets:
        lines += ["", "| target | value | limit | met |", "|---|---|---|---|"]
        for t in targets:
            met = "yes" if t["met"] else "NO"
            detail = f" ({t['detail']})" if t["detail"] else ""
            lines.append(f"| {t['target']}{detail} | {t['value']:.3f} | <= {t['limit']} | {met} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    comps = [("param_bytes", "parameters"), ("grad_bytes", "gradients"), ("peak_optimizer_bytes", "optimizer state"),
             ("master_bytes", "master copies")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    bottom = [0.0] * len(names)
    for key, label in comps:
        values = [(results[n].get(key) or 0) / 2**20 for n in names]
        left.bar(names, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values)]
    rss = [results[n]["peak_rss_bytes"] / 2**20 for n in names]
    other = [max(0.0, r - b) for r, b in zip(rss, bottom)]
    left.bar(names, other, bottom=bottom, label="rest of peak RSS", color="lightgrey")
    left.set_ylabel("MB")
    left.set_title("Peak memory by component")
    left.legend(fontsize=8)
    right.bar(names, [results[n]["median_step_seconds"] for n in names], color="tab:purple")
    right.set_ylabel("seconds")
    right.set_title("Median step time")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=35, labelsize=8)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="llama2", choices=sorted(SHAPES),
                        help="model shape: llama2 (vocab 32000, hidden 512, 24 layers) or llama3 (Llama-3-8B's "
                        "vocabulary/hidden ratio: vocab 16032, hidden 512, 16 layers, 8 heads / 2 KV heads); "
                        "--hidden/--layers/--vocab/--intermediate override its values")
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument("--heads", type=int, default=None, help="default: the shape's (hidden / 64)")
    parser.add_argument("--intermediate", type=int, default=None, help="default: the shape's ratio to hidden")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--gamma", type=int, default=2)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate of every row (constant)")
    parser.add_argument("--proj-rank", type=int, default=64, help="GaLore's and APOLLO's projection rank")
    parser.add_argument("--distinct", type=int, default=8,
                        help="distinct random sequences, repeated in turn (0: every sequence new)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per method (default: torch's); 1 is steadier on a shared machine")
    parser.add_argument("--methods", default=None, help="comma-separated subset of " + ", ".join(ALL_METHODS)
                        + " (default: every one this installation can run)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-compare"))
    parser.add_argument("--reuse", action="store_true",
                        help="reuse a method's result in --out when it was measured with the same settings")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-spec", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.child:
        result = run_method(args.child, json.loads(args.child_spec))
        Path(args.child_result).write_text(json.dumps(result, indent=2))
        return result
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else default_methods()
    check_methods(methods)
    if args.steps <= WARMUP_STEPS:
        raise SystemExit(f"--steps {args.steps}: expected more than the {WARMUP_STEPS} warm-up steps")
    spec = spec_from_args(args)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--reuse"]
    command = "python benchmarks/compare_methods.py " + " ".join(shown)
    results = {m: run_child(m, spec, out, args.reuse) for m in methods}
    targets = check_targets(results, spec)
    report = {
        "spec": spec,
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform,
                    "device": next(iter(results.values()))["device"]},
        "results": results,
        "targets": targets,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    table = markdown(results, spec, targets, command.strip())
    (out / "results.md").write_text(table)
    plot(results, out / "results.png")
    print(table)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")
    return report


if __name__ == "__main__":
    main()
