"""Releasing and measuring optimizer state.

``torch.optim.AdamW`` (and bitsandbytes' 8-bit AdamW) keep their moments in
``optimizer.state[param]``, created lazily at the first step in which the parameter
has a gradient, and skip parameters whose ``.grad`` is ``None``. So a layer that is
frozen (``requires_grad=False``, ``.grad=None``) is never touched, and dropping its
entry from ``optimizer.state`` frees its moments; when the layer is sampled again,
AdamW starts it from zero, which is what the paper's runs did by rebuilding the
optimizer every interval.
"""

from __future__ import annotations

from typing import Iterable

import torch

# Optimizer classes whose per-parameter state can be dropped and recreated safely.
SUPPORTED_OPTIMIZER_CLASSES = ("AdamW", "Adam", "AdamW8bit", "PagedAdamW8bit", "AdamW32bit", "PagedAdamW", "PagedAdamW32bit")
# The Axolotl/transformers `optimizer:` names that resolve to those classes.
SUPPORTED_OPTIMIZER_NAMES = (
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_bnb_8bit",
    "adamw_8bit",
    "paged_adamw_8bit",
    "paged_adamw_32bit",
)


def unwrap_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer that owns the state (accelerate wraps it in ``AcceleratedOptimizer``)."""
    while hasattr(optimizer, "optimizer") and isinstance(optimizer.optimizer, torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def check_supported(optimizer: torch.optim.Optimizer) -> None:
    inner = unwrap_optimizer(optimizer)
    name = type(inner).__name__
    if name not in SUPPORTED_OPTIMIZER_CLASSES:
        raise ValueError(
            f"lisa: optimizer {type(inner).__module__}.{name} is not supported: LISA frees and "
            "recreates per-parameter AdamW state. Use `optimizer:` one of "
            f"{', '.join(SUPPORTED_OPTIMIZER_NAMES)}"
        )


def tensor_bytes(value: object) -> int:
    """Bytes this process holds for ``value``: for a sharded DTensor (FSDP2), its local shard only."""
    if isinstance(value, torch.Tensor):
        local = value.to_local() if hasattr(value, "to_local") else value
        return local.numel() * local.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in per-parameter optimizer state, summed over its tensors."""
    return sum(tensor_bytes(s) for s in unwrap_optimizer(optimizer).state.values())


def release_state(optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter]) -> int:
    """Drop the state of ``params``; return the bytes released."""
    state = unwrap_optimizer(optimizer).state
    released = 0
    for p in params:
        entry = state.pop(p, None)
        if entry is not None:
            released += tensor_bytes(entry)
    return released


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
