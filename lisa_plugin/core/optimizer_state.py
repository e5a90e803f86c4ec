"""Releasing and measuring optimizer state.

``torch.optim.AdamW`` (and bitsandbytes' 8-bit AdamW) keep their moments in
``optimizer.state[param]``, created lazily at the first step in which the parameter
has a gradient, and skip parameters whose ``.grad`` is ``None``. So a layer that is
frozen (``requires_grad=False``, ``.grad=None``) is never touched, and dropping its
entry from ``optimizer.state`` frees its moments; when the layer is sampled again,
AdamW starts it from zero, which is what the paper's runs did by rebuilding the
optimizer every interval.

bitsandbytes' 8-bit AdamW keeps, per parameter, ``state1``/``state2`` (uint8, or float32
below ``min_8bit_size`` elements) and ``absmax1``/``absmax2``, all freed with the entry, and
``qmap1``/``qmap2``, one pair shared by every parameter, which stays (so it is counted once and
never as released). With ``lisa.eh_state: 8bit`` only E and H have that 8-bit layout and the
layers float32 moments; its analytic bound is :func:`lisa_plugin.core.eh_state.bnb_state_bound`
(torch-free, for the planner). Its paged variants are refused: a paged buffer is CUDA unified memory that
bitsandbytes keeps in ``GlobalPageManager.paged_tensors`` for the life of the process and has
no call to free, so dropping the entry would free nothing.
"""

from __future__ import annotations

from typing import Iterable

import torch

# Optimizer classes whose per-parameter state can be dropped and recreated safely.
SUPPORTED_OPTIMIZER_CLASSES = ("AdamW", "Adam", "AdamW8bit", "AdamW32bit")
# The Axolotl/transformers `optimizer:` names that resolve to those classes.
SUPPORTED_OPTIMIZER_NAMES = ("adamw_torch", "adamw_torch_fused", "adamw_bnb_8bit", "adamw_8bit")
# Names that resolve to a bitsandbytes optimizer with `is_paged=True` (refused, see the module docstring).
PAGED_OPTIMIZER_NAMES = ("paged_adamw_8bit", "paged_adamw_32bit")
PAGED_REFUSAL = (
    "its state lives in CUDA unified memory that bitsandbytes registers in its global page "
    "manager and never frees, so `optimizer_state: release` could not free the state of layers "
    "switched off. Use `optimizer: adamw_bnb_8bit` (the same 8-bit state, not paged) or `adamw_torch`"
)


def unwrap_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer that owns the state (accelerate wraps it in ``AcceleratedOptimizer``)."""
    while hasattr(optimizer, "optimizer") and isinstance(optimizer.optimizer, torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def check_supported(optimizer: torch.optim.Optimizer) -> None:
    inner = unwrap_optimizer(optimizer)
    name = f"{type(inner).__module__}.{type(inner).__name__}"
    if getattr(inner, "is_paged", False):
        raise ValueError(f"lisa: optimizer {name} is paged (is_paged=True), which LISA refuses: {PAGED_REFUSAL}")
    if type(inner).__name__ not in SUPPORTED_OPTIMIZER_CLASSES:
        raise ValueError(
            f"lisa: optimizer {name} is not supported: LISA frees and "
            "recreates per-parameter AdamW state. Use `optimizer:` one of "
            f"{', '.join(SUPPORTED_OPTIMIZER_NAMES)}"
        )


def _add_tensors(value: object, seen: dict[tuple[int, int], int]) -> None:
    """Record each tensor in ``value`` by (address, size), so a tensor held twice counts once;
    of a sharded DTensor (FSDP2), the local shard only."""
    if isinstance(value, torch.Tensor):
        local = value.to_local() if hasattr(value, "to_local") else value
        size = local.numel() * local.element_size()
        seen[(local.data_ptr(), size)] = size
    elif isinstance(value, dict):
        for v in value.values():
            _add_tensors(v, seen)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _add_tensors(v, seen)


def tensor_bytes(value: object) -> int:
    """Bytes this process holds for the tensors in ``value``, each distinct tensor once."""
    seen: dict[tuple[int, int], int] = {}
    _add_tensors(value, seen)
    return sum(seen.values())


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in per-parameter optimizer state; a tensor shared by several entries (the
    quantization maps of bitsandbytes' 8-bit AdamW) counts once."""
    return tensor_bytes(list(unwrap_optimizer(optimizer).state.values()))


def release_state(optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter]) -> int:
    """Drop the state of ``params``; return the bytes released: those no remaining entry still holds."""
    inner = unwrap_optimizer(optimizer)
    before = state_bytes(inner)
    for p in params:
        inner.state.pop(p, None)
    return before - state_bytes(inner)


def adamw_state_bound(params: Iterable[torch.nn.Parameter]) -> int:
    """Bytes torch's AdamW holds for ``params``: two moments like the parameter, plus a step scalar."""
    return sum(2 * p.numel() * p.element_size() + 4 for p in params)


def adamw_state_bound_per_rank(params: Iterable[torch.nn.Parameter], world_size: int) -> int:
    """What :func:`adamw_state_bound` becomes per rank when FSDP2 shards ``params`` over ``world_size``.

    The moments are sharded like their parameter (``numel`` is the global size, also for a
    DTensor); every rank keeps its own 4-byte ``step``. FSDP2 pads dim 0 to a multiple of the
    world size, so a rank's shard can differ from this by at most one row per tensor.
    """
    if world_size < 1:
        raise ValueError(f"world_size: expected 1 or more, got {world_size}")
    return sum(2 * p.numel() * p.element_size() // world_size + 4 for p in params)
