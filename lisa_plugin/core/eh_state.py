"""8-bit AdamW state for E and H only (``lisa.eh_state: 8bit``), decoder layers in 32 bits.

With a large vocabulary the always-trainable embedding (E) and LM head (H) dominate what LISA
trains (Llama-3-8B: 2 x 128,256 x 4,096 parameters against 2 x 218 M for two layers), so their
AdamW moments are the part worth shrinking. bitsandbytes' 8-bit AdamW stores a moment in one
byte per element plus a float32 maximum per 256-element block (about 2.03 bytes per element for
both moments, against 8 for float32 moments).

How: the user picks bitsandbytes' non-paged 8-bit AdamW (``optimizer: adamw_bnb_8bit``), whose
default is 8-bit state for every tensor. Before the first step, every decoder-layer parameter is
registered in bitsandbytes' ``GlobalOptimManager`` with ``optim_bits: 32`` and every E/H
parameter with ``optim_bits: 8``. bitsandbytes 0.50 reads that registry (``pid2config``, keyed by
``id(param)``) whenever it creates a parameter's state, so a layer that LISA released and later
activates again is re-created in 32 bits. transformers' ``Trainer.create_optimizer`` registers
every ``nn.Embedding`` for 32-bit state through ``register_module_override``, which bitsandbytes
applies at its first step and which would replace our entry for E: those module overrides are
dropped for E/H parameters. A tied embedding/head tensor is one parameter, registered once.

Entries are removed again by :meth:`EhStateOverrides.remove`, and by a finalizer when their
parameter is garbage-collected (the registry is process-wide and keyed by ``id``, which a new
tensor may reuse).

This module imports neither torch nor bitsandbytes at import time (the memory planner uses its
constants and :func:`bnb_state_bytes`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import torch

    from lisa_plugin.core.layers import ParameterPartition

EH_STATES = ("32bit", "8bit")
# The `optimizer:` names that resolve to bitsandbytes' non-paged AdamW with optim_bits=8.
EIGHT_BIT_OPTIMIZER_NAMES = ("adamw_bnb_8bit", "adamw_8bit")

# bitsandbytes' state layout (bitsandbytes/optim/optimizer.py, Optimizer2State.init_state).
BNB_MIN_8BIT_SIZE = 4096  # its default min_8bit_size: smaller tensors keep float32 moments
BNB_BLOCK = 256  # elements per float32 absmax of its blockwise 8-bit state
BNB_QMAPS_BYTES = 2 * 256 * 4  # its two float32 quantization maps, shared by every 8-bit tensor


def bnb_state_bytes(eight_bit_sizes: Iterable[int], other_sizes: Iterable[int]) -> int:
    """Bytes of bitsandbytes' AdamW state for tensors of these element counts, the first ones
    with 8-bit state, the others with 32-bit state.

    8-bit, from ``BNB_MIN_8BIT_SIZE`` elements on: two uint8 moments and two float32 ``absmax``
    per ``BNB_BLOCK`` elements, plus the two quantization maps once; 32-bit (and smaller tensors):
    two float32 moments, whatever the parameter's dtype. ``step`` is a Python int (no tensor).
    """
    eight = list(eight_bit_sizes)
    quantized = [n for n in eight if n >= BNB_MIN_8BIT_SIZE]
    small = sum(n for n in eight if n < BNB_MIN_8BIT_SIZE) + sum(other_sizes)
    blocks = sum(-(-n // BNB_BLOCK) for n in quantized)
    return 2 * sum(quantized) + 2 * 4 * blocks + 2 * 4 * small + (BNB_QMAPS_BYTES if quantized else 0)


def bnb_state_bound(params: Iterable["torch.nn.Parameter"], eight_bit: Iterable["torch.nn.Parameter"] = ()) -> int:
    """:func:`bnb_state_bytes` of ``params``, those also in ``eight_bit`` in 8 bits; a tensor listed
    twice (a tied embedding and head) counts once."""
    eight = {id(p) for p in eight_bit}
    unique = {id(p): p for p in params}
    return bnb_state_bytes([p.numel() for i, p in unique.items() if i in eight],
                           [p.numel() for i, p in unique.items() if i not in eight])


def is_bnb_8bit(optimizer: "torch.optim.Optimizer") -> bool:
    """Whether ``optimizer`` is bitsandbytes' AdamW with 8-bit state by default and not paged."""
    from lisa_plugin.core.optimizer_state import unwrap_optimizer

    inner = unwrap_optimizer(optimizer)
    args = getattr(inner, "args", None)
    return (type(inner).__module__.startswith("bitsandbytes.") and type(inner).__name__ in ("AdamW", "AdamW8bit")
            and getattr(args, "optim_bits", None) == 8 and not getattr(inner, "is_paged", False))


def optimizer_name_problem(optimizer: object) -> str | None:
    """The config problem of ``lisa.eh_state: 8bit`` beside ``optimizer: <optimizer>``, if any."""
    if str(optimizer) in EIGHT_BIT_OPTIMIZER_NAMES:
        return None
    return (f"`lisa.eh_state: 8bit` needs bitsandbytes' 8-bit AdamW, `optimizer: adamw_bnb_8bit` (not paged); "
            f"got `optimizer: {optimizer}`. Set `optimizer: adamw_bnb_8bit`, or `lisa.eh_state: 32bit`")


@dataclass
class EhStateOverrides:
    """The entries registered in bitsandbytes' ``GlobalOptimManager.pid2config``."""

    eight_bit: list[int] = field(default_factory=list)  # ids of E/H parameters
    thirty_two_bit: list[int] = field(default_factory=list)  # ids of decoder-layer parameters
    dropped_module_overrides: int = 0

    def remove(self) -> None:
        import bitsandbytes as bnb

        registry = bnb.optim.GlobalOptimManager.get_instance().pid2config
        for pid in self.eight_bit + self.thirty_two_bit:
            registry.pop(pid, None)
        self.eight_bit, self.thirty_two_bit = [], []


def _register(registry: dict, params: Iterable["torch.nn.Parameter"], bits: int) -> list[int]:
    ids = []
    for p in params:
        registry.setdefault(id(p), {})["optim_bits"] = bits
        # The registry is keyed by id(p): forget the entry with the tensor, before a new one reuses the id.
        weakref.finalize(p, registry.pop, id(p), None)
        ids.append(id(p))
    return ids


def apply_eh_8bit(optimizer: "torch.optim.Optimizer", partition: "ParameterPartition") -> EhStateOverrides:
    """Give E and H 8-bit state and every decoder layer 32-bit state in bitsandbytes' 8-bit AdamW.

    Call before the optimizer's first step (E/H state created earlier keeps its layout).
    Raises ``ValueError`` naming ``lisa.eh_state`` when ``optimizer`` is not that optimizer.
    """
    if not is_bnb_8bit(optimizer):
        inner = optimizer
        while hasattr(inner, "optimizer"):
            inner = inner.optimizer
        raise ValueError(
            f"lisa.eh_state: 8bit needs bitsandbytes' non-paged 8-bit AdamW (`optimizer: adamw_bnb_8bit`), "
            f"got {type(inner).__module__}.{type(inner).__name__}. Set `optimizer: adamw_bnb_8bit`, or "
            "`lisa.eh_state: 32bit`"
        )
    import bitsandbytes as bnb

    manager = bnb.optim.GlobalOptimManager.get_instance()
    manager.uses_config_override = True
    eh = {id(p): p for p in partition.always_trainable(True, True)}  # a tied tensor once
    kept = [t for t in manager.module_weight_config_triple if id(getattr(t[0], t[1])) not in eh]
    dropped = len(manager.module_weight_config_triple) - len(kept)
    manager.module_weight_config_triple = kept
    layers = [p for group in partition.layers for p in group]
    return EhStateOverrides(_register(manager.pid2config, eh.values(), 8),
                            _register(manager.pid2config, layers, 32), dropped)


def apply(eh_state: str, optimizer: "torch.optim.Optimizer", partition: "ParameterPartition") -> EhStateOverrides | None:
    """What ``lisa.eh_state`` asks for: nothing for ``32bit`` (today's behaviour), else :func:`apply_eh_8bit`."""
    return apply_eh_8bit(optimizer, partition) if eh_state == "8bit" else None
