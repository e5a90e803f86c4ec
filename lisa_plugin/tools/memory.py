"""Predict peak training memory of full fine-tuning, LoRA and LISA, component by component.

    python -m lisa_plugin.tools.memory llama-2-7b --dtype bf16 --batch 1 --seq 1024 --gamma 2 --rank 128
    python -m lisa_plugin.tools.memory path/to/config.json --json
    lisa-memory llama-2-70b --gradient-checkpointing --fsdp-gpus 8    # per GPU, FSDP2 over 8 GPUs
    lisa-memory --list

Like ``accelerate estimate-memory`` but for all three methods, and with activations. The model is
a ``config.json`` (or a folder holding one) or a built-in shape (``--list``). Components:

* weights: every parameter, in ``--dtype`` (LoRA adds its adapters in float32, as peft does);
* gradients: one per trainable parameter, in its dtype;
* optimizer: torch AdamW, two moments like the parameter plus a 4-byte step per tensor, or
  (``--optimizer adamw_bnb_8bit``) bitsandbytes' 8-bit AdamW as transformers' Trainer sets it up, with
  ``nn.Embedding`` weights in 32-bit state (:func:`optimizer_state_bytes`);
* activations: tensors autograd keeps for backward, from the per-layer formula in
  :func:`activation_bytes` (documented there), plus the loss over the vocabulary.

LISA's trainable set is E + H + gamma decoder layers (``optimizer_state: release``: the state of
layers switched off is freed, so the bound holds for the whole run). ``--master-weights fp32``
(``lisa.master_weights: fp32``, a bf16/fp16 model): the trainable set's fp32 masters count with
the optimizer (12 bytes a parameter: master and two fp32 moments, as the plugin's bound), and its
gradients are fp32 (each bf16 gradient is moved into its master's fp32 one before the step). The prediction is a sum of
tensors; allocator caching, the CUDA context (~0.5-1 GB) and fragmentation come on top.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from lisa_plugin.core.eh_state import EH_STATES, bnb_state_bytes

DTYPE_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2}
METHODS = ("full", "lora", "lisa")
ADAM_STEP_BYTES = 4  # torch AdamW's `step`: a float32 scalar tensor per parameter
LORA_DTYPE_BYTES = 4  # peft keeps adapters in float32 (autocast_adapter_dtype=True)
OPTIMIZERS = ("adamw_torch", "adamw_bnb_8bit")  # the `optimizer:` values LISA supports, by state layout
MASTER_WEIGHTS = ("none", "fp32")  # lisa.master_weights
MASTER_BYTES = 4  # an fp32 master, and the fp32 gradient it is given before each step


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs of a decoder-only LM."""

    name: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    tie_embeddings: bool = False
    gated_mlp: bool = True  # Llama/Mistral: gate, up, down; GPT-2: fc, proj
    layer_norm_bias: bool = False  # LayerNorm (weight + bias) vs RMSNorm (weight)
    attention_bias: bool = False
    mlp_bias: bool = False
    learned_positions: int = 0  # GPT-2's wpe rows
    head_dim: int | None = None

    @property
    def dim_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.dim_head

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.dim_head

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer of one decoder layer: LoRA's ``all-linear`` targets."""
        h, i = self.hidden_size, self.intermediate_size
        if self.gated_mlp:
            return [(h, self.q_dim), (h, self.kv_dim), (h, self.kv_dim), (self.q_dim, h), (h, i), (h, i), (i, h)]
        return [(h, self.q_dim + 2 * self.kv_dim), (self.q_dim, h), (h, i), (i, h)]  # GPT-2 fuses q, k, v

    def layer_params(self) -> int:
        h = self.hidden_size
        weights = sum(a * b for a, b in self.linear_shapes())
        norms = 2 * h * (2 if self.layer_norm_bias else 1)
        bias = 0
        if self.attention_bias:
            bias += self.q_dim + 2 * self.kv_dim + h
        if self.mlp_bias:
            bias += sum(out for _, out in self.linear_shapes()[-(3 if self.gated_mlp else 2):])
        return weights + norms + bias

    def embedding_params(self) -> int:
        return (self.vocab_size + self.learned_positions) * self.hidden_size

    def head_params(self) -> int:
        """LM head (unless tied to the embeddings) and the final norm."""
        norm = self.hidden_size * (2 if self.layer_norm_bias else 1)
        return norm + (0 if self.tie_embeddings else self.vocab_size * self.hidden_size)

    def total_params(self) -> int:
        return self.embedding_params() + self.head_params() + self.num_layers * self.layer_params()

    def layer_tensor_sizes(self) -> list[int]:
        """Elements of each tensor of one decoder layer (they sum to :meth:`layer_params`)."""
        h = self.hidden_size
        sizes = [a * b for a, b in self.linear_shapes()] + [h] * (2 * (2 if self.layer_norm_bias else 1))
        if self.attention_bias:
            sizes += [self.q_dim, self.kv_dim, self.kv_dim, h] if self.gated_mlp else [self.q_dim + 2 * self.kv_dim, h]
        if self.mlp_bias:
            sizes += [out for _, out in self.linear_shapes()[-(3 if self.gated_mlp else 2):]]
        return sizes

    def embedding_tensor_sizes(self) -> list[int]:
        return [self.vocab_size * self.hidden_size] + [self.learned_positions * self.hidden_size] * bool(self.learned_positions)

    def head_tensor_sizes(self, with_tied_table: bool = False) -> list[int]:
        """The final norm's tensors and the LM head; a tied table only if ``with_tied_table``."""
        table = not self.tie_embeddings or with_tied_table
        return [self.hidden_size] * (2 if self.layer_norm_bias else 1) + [self.vocab_size * self.hidden_size] * table


def _llama(name, vocab, hidden, layers, heads, kv, inter, **kw) -> ModelShape:
    return ModelShape(name, vocab, hidden, layers, heads, kv, inter, **kw)


BUILTIN_SHAPES: dict[str, ModelShape] = {
    s.name: s
    for s in (
        _llama("llama-2-7b", 32000, 4096, 32, 32, 32, 11008),
        _llama("llama-2-13b", 32000, 5120, 40, 40, 40, 13824),
        _llama("llama-2-70b", 32000, 8192, 80, 64, 8, 28672),
        # Llama 3: a 128,256-token vocabulary, so untied E and H are 1.05 B parameters at 8B
        _llama("llama-3-8b", 128256, 4096, 32, 32, 8, 14336),
        _llama("llama-3-70b", 128256, 8192, 80, 64, 8, 28672),
        _llama("mistral-7b", 32000, 4096, 32, 32, 8, 14336),
        _llama("tinyllama-1.1b", 32000, 2048, 22, 32, 4, 5632),
        ModelShape("gpt2", 50257, 768, 12, 12, 12, 3072, tie_embeddings=True, gated_mlp=False,
                   layer_norm_bias=True, attention_bias=True, mlp_bias=True, learned_positions=1024),
    )
}


def shape_from_config(config: dict, name: str = "config.json") -> ModelShape:
    """A ``ModelShape`` from a Hugging Face ``config.json`` (Llama-like or GPT-2 layouts)."""
    model_type = config.get("model_type", "")
    if model_type == "gpt2" or "n_embd" in config:
        hidden = config["n_embd"]
        return ModelShape(
            name, config["vocab_size"], hidden, config["n_layer"], config["n_head"], config["n_head"],
            config.get("n_inner") or 4 * hidden, tie_embeddings=config.get("tie_word_embeddings", True),
            gated_mlp=False, layer_norm_bias=True, attention_bias=True, mlp_bias=True,
            learned_positions=config.get("n_positions", 1024),
        )
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    missing = [k for k in required if k not in config]
    if missing:
        raise ValueError(
            f"{name}: missing {', '.join(missing)} (model_type {model_type!r}); expected a Llama-like "
            f"config with {', '.join(required)}, or a GPT-2 config with n_embd/n_layer/n_head"
        )
    return ModelShape(
        name, config["vocab_size"], config["hidden_size"], config["num_hidden_layers"],
        config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"],
        config["intermediate_size"], tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        attention_bias=bool(config.get("attention_bias", model_type == "qwen2")),
        mlp_bias=bool(config.get("mlp_bias", False)), head_dim=config.get("head_dim"),
    )


def resolve_model(model: str) -> ModelShape:
    """A built-in name (case-insensitive), a ``config.json`` path, or a folder holding one."""
    key = model.lower()
    if key in BUILTIN_SHAPES:
        return BUILTIN_SHAPES[key]
    path = Path(model)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return shape_from_config(json.loads(path.read_text()), str(path))
    from lisa_formats.suggest import did_you_mean

    raise ValueError(
        f"model: {model!r} is neither a built-in shape nor a config.json/folder.{did_you_mean(key, BUILTIN_SHAPES)} "
        f"Available: {', '.join(BUILTIN_SHAPES)}"
    )


@dataclass
class Plan:
    """Predicted peak bytes of one method, by component."""

    method: str
    model: str
    dtype: str
    total_params: int
    trainable_params: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    gpus: int = 1  # > 1: per-GPU bytes under FSDP2 over that many GPUs (fsdp2_plan)

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def to_json(self) -> dict:
        return {**asdict(self), "total": self.total}


@dataclass(frozen=True)
class Settings:
    dtype: str = "bf16"
    batch: int = 1
    seq: int = 1024
    gamma: int = 2
    rank: int = 128
    gradient_checkpointing: bool = False
    train_embeddings: bool = True
    train_head: bool = True
    optimizer: str = "adamw_torch"
    eh_state: str = "32bit"  # LISA: "8bit" = lisa.eh_state: 8bit (needs adamw_bnb_8bit)
    master_weights: str = "none"  # LISA: "fp32" = lisa.master_weights: fp32 (bf16/fp16 model, torch AdamW)
    lora_dropout: float = 0.0  # LoRA: > 0 keeps each adapter's dropout output and mask for backward


def optimizer_state_bytes(sizes: list[int], dtype_bytes: int, optimizer: str = "adamw_torch",
                          embeddings: list[int] | None = None) -> int:
    """AdamW state of trainable tensors of ``sizes`` elements whose dtype has ``dtype_bytes`` bytes.

    ``adamw_torch``: two moments like the parameter and a 4-byte ``step`` tensor per tensor.
    ``adamw_bnb_8bit`` (bitsandbytes' 8-bit AdamW, whatever the parameter dtype): per tensor of at
    least 4096 elements two uint8 moments and two float32 ``absmax`` per 256-element block, below that
    two float32 moments; ``step`` is a Python int; two quantization maps are shared by all tensors.
    ``embeddings``: those of ``sizes`` that are ``nn.Embedding`` weights, which transformers' Trainer
    (and so Axolotl) registers for 32-bit state under ``adamw_bnb_8bit``.
    Checked against the real optimizers in ``tests/lisa_plugin/test_memory.py``.
    """
    if optimizer == "adamw_torch":
        return sum(2 * n * dtype_bytes + ADAM_STEP_BYTES for n in sizes)
    if optimizer != "adamw_bnb_8bit":
        raise ValueError(f"optimizer: unknown {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
    rest = list(sizes)
    for n in embeddings or []:
        rest.remove(n)
    return bnb_state_bytes(rest, embeddings or [])


def embedding_weight_sizes(shape: ModelShape, method: str, s: Settings) -> list[int]:
    """Elements of each ``nn.Embedding`` weight ``method`` trains (the token table, GPT-2's positions): the
    tensors the Trainer keeps in 32-bit state under ``adamw_bnb_8bit``; a tied table counts when E or H trains."""
    if method == "full" or (method == "lisa" and s.train_embeddings):
        return shape.embedding_tensor_sizes()
    if method == "lisa" and s.train_head and shape.tie_embeddings:
        return [shape.vocab_size * shape.hidden_size]
    return []


def trainable_tensor_sizes(shape: ModelShape, method: str, s: Settings) -> list[int]:
    """Elements of each tensor ``method`` trains (LoRA: its A and B adapters)."""
    if method == "full":
        return shape.embedding_tensor_sizes() + shape.head_tensor_sizes() + shape.num_layers * shape.layer_tensor_sizes()
    if method == "lora":
        return shape.num_layers * [s.rank * n for a, b in shape.linear_shapes() for n in (a, b)]
    eh, layers = lisa_tensor_sizes(shape, s)
    return layers + eh


def lisa_tensor_sizes(shape: ModelShape, s: Settings) -> tuple[list[int], list[int]]:
    """Elements of each tensor LISA trains: (E and H, the gamma decoder layers)."""
    eh = shape.embedding_tensor_sizes() if s.train_embeddings else []
    if s.train_head:  # a tied table trains as H when E does not
        eh += shape.head_tensor_sizes(with_tied_table=shape.tie_embeddings and not s.train_embeddings)
    return eh, s.gamma * shape.layer_tensor_sizes()


def lisa_state_bytes(shape: ModelShape, s: Settings, dtype_bytes: int) -> int:
    """LISA's optimizer state; with ``eh_state: 8bit`` bitsandbytes' 8-bit state for E and H and its
    32-bit state (float32 moments, whatever the dtype) for the layers."""
    eh, layers = lisa_tensor_sizes(shape, s)
    if s.eh_state == "32bit":
        return optimizer_state_bytes(layers + eh, dtype_bytes, s.optimizer, embedding_weight_sizes(shape, "lisa", s))
    if s.eh_state not in EH_STATES:
        raise ValueError(f"eh_state: unknown {s.eh_state!r}; expected one of {', '.join(EH_STATES)}")
    if s.optimizer != "adamw_bnb_8bit":
        raise ValueError(f"--eh-state 8bit needs --optimizer adamw_bnb_8bit (lisa.eh_state: 8bit runs on bitsandbytes' "
                         f"8-bit AdamW), got --optimizer {s.optimizer}")
    return bnb_state_bytes(eh, layers)


def _check_master_weights(s: Settings) -> None:
    """The plugin's own refusals (lisa_plugin/config.py), so the planner never shows a setup that cannot run."""
    if s.master_weights not in MASTER_WEIGHTS:
        raise ValueError(f"master_weights: unknown {s.master_weights!r}; expected one of {', '.join(MASTER_WEIGHTS)}")
    if DTYPE_BYTES[s.dtype] == 4:
        raise ValueError("--master-weights fp32 on a float32 model has no effect: use --dtype bf16 (or fp16)")
    if s.optimizer != "adamw_torch" or s.eh_state != "32bit":
        raise ValueError("--master-weights fp32 works with torch's AdamW only (--optimizer adamw_torch, --eh-state 32bit)")


# What a decoder layer saves for backward depends on what it trains. Measured with saved_tensors_hooks
# (torch 2.13, transformers 5.16, peft 0.20, SDPA attention) on Llama and GPT-2 layouts of several
# widths, in float32 and bfloat16, as the difference per token between models of 2 and 3 layers, and
# fitted to h (hidden) and i (MLP width); the fits are exact to within the adapters' rank-r terms.
# A frozen layer that still passes the gradient down (LISA's inactive layers: E trains below them)
# keeps no input of a linear layer and no normalised output (only a trainable weight needs those):
FROZEN_SAVES_LESS = {True: (4, 1), False: (3, 1)}  # gated_mlp -> (h, i) elements of the dtype, vs trainable
# LoRA's adapters are float32 (peft) and keep their inputs for the gradient of A: in a float32 model the
# layer's distinct inputs, in a bf16/fp16 one a float32 cast per adapter (q, k, v, o, gate, up each cast):
LORA_INPUTS = {(True, 4): (2, 1), (True, 2): (6, 1), (False, 4): (3, 1), (False, 2): (3, 1)}  # float32 (h, i)
# lora_dropout > 0 adds each adapter's dropout output and mask, in bytes per token:
LORA_DROPOUT_BYTES = {(True, 4): (40, 4), (True, 2): (24, 4), (False, 4): (12, 4), (False, 2): (12, 4)}  # (h, i)
LAYER_ROLES = ("trainable", "frozen", "lora")


def layer_activation_bytes(shape: ModelShape, s: Settings, role: str = "trainable") -> int:
    """Bytes one decoder layer saves for backward per token, as a ``trainable`` layer (full fine-tuning,
    LISA's active layers), a ``frozen`` one that passes the gradient down (LISA's others), or with
    ``lora`` adapters on its linear layers (``s.lora_dropout`` > 0 adds the dropout's copies)."""
    if role not in LAYER_ROLES:
        raise ValueError(f"role: unknown {role!r}; expected one of {', '.join(LAYER_ROLES)}")
    b = DTYPE_BYTES[s.dtype]
    h, i = shape.hidden_size, shape.intermediate_size
    upcast = 0 if b == 4 else 2 * h * 4 // b  # float32 copies of the two norm inputs, in dtype elements
    elements = 4 * h + upcast + shape.q_dim + 2 * shape.kv_dim + 2 * shape.q_dim + (4 if shape.gated_mlp else 6) * i
    if role == "trainable":
        return elements * b
    less_h, less_i = FROZEN_SAVES_LESS[shape.gated_mlp]
    frozen = (elements - less_h * h - less_i * i) * b
    if role == "frozen":
        return frozen
    key = (shape.gated_mlp, 4 if b == 4 else 2)
    in_h, in_i = LORA_INPUTS[key]
    lora = frozen + (in_h * h + in_i * i) * LORA_DTYPE_BYTES
    lora += len(shape.linear_shapes()) * s.rank * LORA_DTYPE_BYTES  # each adapter's rank-r intermediate (x A)
    if s.lora_dropout > 0:
        drop_h, drop_i = LORA_DROPOUT_BYTES[key]
        lora += drop_h * h + drop_i * i
    return lora


def activation_bytes(shape: ModelShape, s: Settings, method: str = "full") -> int:
    """Bytes autograd saves for backward in one forward pass of ``method`` (the peak is at the start of backward).

    A trainable decoder layer keeps, per token, in elements of ``dtype`` (eager/SDPA attention, no s x s matrix):

    * each norm: its input and the normalised output (2 x 2h) plus a float32 copy of the input when
      the dtype is not float32 (RMSNorm upcasts);
    * attention: q, k, v after RoPE (q_dim + 2 kv_dim), the attention output and its reshaped copy
      fed to the output projection (2 q_dim);
    * MLP: gated: gate, up, act(gate), act*up (4 i); GPT-2: fc output, GELU output and the four
      intermediates of its tanh approximation, written out in Python (6 i).

    The methods differ in their layers (:func:`layer_activation_bytes`): full fine-tuning's are all
    trainable; LISA's gamma active layers are, and the others are frozen but still pass the gradient
    down to E (they keep less: no linear layer's input); LoRA's keep, besides the frozen set, what their
    float32 adapters need. So at many tokens per step LISA keeps less than LoRA, which can outweigh
    E and H's gradients and state (``docs/benchmarks.md``).
    The head's term is the final norm (2h) and the float32 log-softmax the loss keeps, plus what the
    loss's backward holds beside it at the peak: the logits' gradient in float32, and in ``dtype`` when
    that is not float32 (so it is above the saved tensors alone by 4 or 6 bytes per token and vocabulary entry).
    With gradient checkpointing a layer keeps only its input (h) and one layer is recomputed at a time.
    Checked against :func:`measure_saved_activation_bytes` in ``tests/lisa_plugin/test_memory.py``.
    """
    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r}; expected one of {', '.join(METHODS)}")
    b = DTYPE_BYTES[s.dtype]
    h = shape.hidden_size
    tokens = s.batch * s.seq
    head = tokens * (2 * h * b + shape.vocab_size * (b + 4 + 4 if b != 4 else 8))
    if method == "lora":
        roles = {"lora": shape.num_layers}
    elif method == "lisa":
        active = min(s.gamma, shape.num_layers)
        roles = {"trainable": active, "frozen": shape.num_layers - active}
    else:
        roles = {"trainable": shape.num_layers}
    per_role = {role: layer_activation_bytes(shape, s, role) for role in roles}
    if s.gradient_checkpointing:
        return tokens * (shape.num_layers * h * b + max(per_role.values())) + head
    return tokens * sum(n * per_role[role] for role, n in roles.items()) + head


def plan(shape: ModelShape, method: str, settings: Settings | None = None) -> Plan:
    s = settings or Settings()
    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r}; expected one of {', '.join(METHODS)}")
    if s.dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype: unknown {s.dtype!r}; expected one of {', '.join(DTYPE_BYTES)}")
    b = DTYPE_BYTES[s.dtype]
    total = shape.total_params()
    weights = total * b
    activations = activation_bytes(shape, s, method)
    if method == "lisa" and not 1 <= s.gamma <= shape.num_layers:
        raise ValueError(f"gamma: {s.gamma} is not in 1..{shape.num_layers} (decoder layers of {shape.name})")
    sizes = trainable_tensor_sizes(shape, method, s)
    trainable = sum(sizes)
    if method == "lora":
        b = LORA_DTYPE_BYTES  # the adapters, their gradients and their state are float32
        weights += trainable * b
    grads, state = trainable * b, optimizer_state_bytes(sizes, b, s.optimizer, embedding_weight_sizes(shape, method, s))
    if method == "lisa" and s.master_weights == "fp32":
        _check_master_weights(s)
        grads = trainable * MASTER_BYTES
        state = trainable * MASTER_BYTES + optimizer_state_bytes(sizes, MASTER_BYTES, s.optimizer)
    elif method == "lisa":
        state = lisa_state_bytes(shape, s, b)
    return Plan(method, shape.name, s.dtype, total, trainable, weights, grads, state, activations)


def lisa_lora_crossover(shape: ModelShape, settings: Settings | None = None) -> int | None:
    """The fewest tokens per micro-batch (batch x seq) at which LISA's predicted total is at or below LoRA's
    with these settings (their batch and seq aside); 0 when it is at every size, None when at none.

    Both totals are linear in the tokens: LISA carries more fixed bytes (E, H and the gamma layers'
    gradients and state), LoRA more bytes per token (its adapters keep their layers' inputs, LISA's frozen
    layers do not), so past some micro-batch size LISA needs less.
    """
    s = settings or Settings()

    def totals(tokens: int) -> tuple[int, int]:
        at = replace(s, batch=1, seq=tokens)
        return plan(shape, "lisa", at).total, plan(shape, "lora", at).total

    (lisa1, lora1), (lisa2, lora2) = totals(1), totals(2)
    lisa_slope, lora_slope = lisa2 - lisa1, lora2 - lora1
    fixed_gap = (lisa1 - lisa_slope) - (lora1 - lora_slope)  # LISA's fixed bytes above LoRA's
    if fixed_gap <= 0:
        return 0
    if lora_slope <= lisa_slope:
        return None
    return -(-fixed_gap // (lora_slope - lisa_slope))


def fsdp2_plan(shape: ModelShape, method: str, settings: Settings | None = None, gpus: int = 1) -> Plan:
    """Per-GPU bytes of ``method`` under FSDP2 over ``gpus`` GPUs, one unit per decoder layer plus the root.

    Weights, gradients and AdamW state are sharded (divided by ``gpus``); on top of its shards a GPU
    holds, unsharded, the root unit (E and H: FSDP2 keeps the root gathered from forward to the end
    of backward) and two decoder layers (the one computing and the one prefetched), and the root's
    unsharded gradients until they are reduce-scattered at the end of backward (when E or H train).
    Activations are not sharded: every GPU runs its own micro-batch.
    """
    s = settings or Settings()
    whole = plan(shape, method, s)
    if gpus < 1:
        raise ValueError(f"gpus: expected 1 or more, got {gpus}")
    b = DTYPE_BYTES[s.dtype]
    unshard = lambda n: n * (gpus - 1) // gpus  # noqa: E731  (the part of a gathered tensor that is not this GPU's shard)
    root = (shape.embedding_params() + shape.head_params()) * b
    gathered = unshard(root + 2 * shape.layer_params() * b)
    root_grads = 0
    if method == "full":
        root_grads = root
    elif method == "lisa":
        root_grads = (shape.embedding_params() * s.train_embeddings + shape.head_params() * s.train_head) * b
    return Plan(
        method, whole.model, whole.dtype, whole.total_params, whole.trainable_params,
        weights=whole.weights // gpus + gathered, gradients=whole.gradients // gpus + unshard(root_grads),
        optimizer=whole.optimizer // gpus, activations=whole.activations, gpus=gpus,
    )


def _gb(n: int) -> str:
    return f"{n / 1e9:,.2f}"


def table(plans: list[Plan]) -> str:
    lines = [
        "| method | trainable params | weights (GB) | gradients (GB) | optimizer (GB) | activations (GB) | total (GB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in plans:
        lines.append(
            f"| {p.method} | {p.trainable_params:,} | {_gb(p.weights)} | {_gb(p.gradients)} | "
            f"{_gb(p.optimizer)} | {_gb(p.activations)} | {_gb(p.total)} |"
        )
    return "\n".join(lines)


def crossover_line(shape: ModelShape, settings: Settings) -> str:
    """One sentence: from which micro-batch size LISA needs no more than LoRA, with these settings."""
    tokens = lisa_lora_crossover(shape, settings)
    if tokens is None:
        return "LISA stays above LoRA at every micro-batch size with these settings."
    if tokens == 0:
        return "LISA is at or below LoRA at every micro-batch size with these settings."
    return (f"LISA is at or below LoRA from {tokens:,} tokens per micro-batch (batch x seq; "
            f"here {settings.batch * settings.seq:,}) with these settings.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lisa-memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="built-in shape name or path to config.json / its folder")
    parser.add_argument("--list", action="store_true", help="list the built-in shapes")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPE_BYTES), help="dtype of the weights (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=1, help="micro-batch size, sequences per step (default: %(default)s)")
    parser.add_argument("--seq", type=int, default=1024, help="sequence length in tokens (default: %(default)s)")
    parser.add_argument("--gamma", type=int, default=2, help="LISA: decoder layers trainable at a time (default: %(default)s)")
    parser.add_argument("--rank", type=int, default=128, help="LoRA rank, all linear layers (default: %(default)s)")
    parser.add_argument("--lora-dropout", type=float, default=0.0,
                        help="LoRA: lora_dropout (> 0 keeps each adapter's dropout output and mask; default: %(default)s)")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="keep only each layer's input for backward (recompute the rest)")
    parser.add_argument("--no-train-embeddings", action="store_true", help="LISA: freeze E")
    parser.add_argument("--no-train-head", action="store_true", help="LISA: freeze H")
    parser.add_argument("--optimizer", default=OPTIMIZERS[0], choices=OPTIMIZERS,
                        help="AdamW state layout: torch's, or bitsandbytes' 8-bit (default: %(default)s)")
    parser.add_argument("--eh-state", default=EH_STATES[0], choices=EH_STATES,
                        help="LISA: 8bit = lisa.eh_state: 8bit, 8-bit state for E and H, 32-bit for the layers "
                        "(with --optimizer adamw_bnb_8bit; default: %(default)s)")
    parser.add_argument("--master-weights", default=MASTER_WEIGHTS[0], choices=MASTER_WEIGHTS,
                        help="LISA: fp32 = lisa.master_weights: fp32, fp32 masters, gradients and AdamW state for the "
                        "trainable set of a bf16/fp16 model (default: %(default)s)")
    parser.add_argument("--methods", default=",".join(METHODS), help="methods to plan, comma-separated (default: %(default)s)")
    parser.add_argument("--fsdp-gpus", type=int, default=1, metavar="N",
                        help="per-GPU bytes under FSDP2 over N GPUs (weights, gradients, state sharded; default: one GPU, no FSDP)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name, shape in BUILTIN_SHAPES.items():
            print(f"{name}: {shape.total_params():,} parameters, {shape.num_layers} layers")
        return 0
    if not args.model:
        parser.error("model: expected a built-in shape name (see --list) or a config.json path")
    try:
        shape = resolve_model(args.model)
        settings = Settings(args.dtype, args.batch, args.seq, args.gamma, args.rank, args.gradient_checkpointing,
                            not args.no_train_embeddings, not args.no_train_head, args.optimizer, args.eh_state,
                            args.master_weights, args.lora_dropout)
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if args.fsdp_gpus > 1:
            plans = [fsdp2_plan(shape, m, settings, args.fsdp_gpus) for m in methods]
        else:
            plans = [plan(shape, m, settings) for m in methods]
    except ValueError as exc:
        print(f"lisa-memory: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"model": asdict(shape), "settings": asdict(settings),
                          "plans": [p.to_json() for p in plans]}, indent=2))
        return 0
    gc = "on" if settings.gradient_checkpointing else "off"
    print(f"{shape.name}: {shape.total_params():,} parameters, {shape.num_layers} layers; {settings.dtype}, "
          f"batch {settings.batch}, sequence {settings.seq}, gamma {settings.gamma}, LoRA rank {settings.rank}"
          + (f" (dropout {settings.lora_dropout:g})" if settings.lora_dropout else "") + ", "
          f"gradient checkpointing {gc}, {settings.optimizer}"
          + (", LISA E/H state 8-bit" if settings.eh_state == "8bit" else "")
          + (", LISA fp32 master weights" if settings.master_weights == "fp32" else "") + (f"; per GPU under FSDP2 over {args.fsdp_gpus} GPUs" if args.fsdp_gpus > 1 else ""))
    print(table(plans))
    if {"lisa", "lora"} <= set(methods) and args.fsdp_gpus == 1:
        print(crossover_line(shape, settings))
    print("Sums of tensors (1 GB = 1e9 bytes); add the CUDA context and allocator slack (~1-2 GB).")
    return 0



def measure_saved_activation_bytes(model, input_ids) -> int:
    """Bytes of the tensors autograd saves for backward in one forward pass with loss (measured).

    Every tensor saved for backward passes through ``torch.autograd.graph.saved_tensors_hooks``;
    their storages are counted once each (views and tensors saved by several ops share one) and
    parameter storages are left out (they are weights, not activations).
    """
    import torch

    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_ptrs:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=input_ids, labels=input_ids).loss
    del loss
    return sum(storages.values())


def cli() -> None:
    """Console entry point ``lisa-memory``."""
    raise SystemExit(main())


if __name__ == "__main__":
    cli()
