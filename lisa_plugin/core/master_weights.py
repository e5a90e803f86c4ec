"""fp32 master weights for LISA's trainable set while the model stays in bf16/fp16 (``lisa.master_weights: fp32``).

Why: an AdamW update smaller than half a bf16 step of the weight is rounded away (a weight near 1
moves in steps of 2**-7; lr 1e-5 moves it by about 1e-5), so pure-bf16 training loses the small
updates that fine-tuning is made of. Keeping an fp32 copy of only what trains now (E, H and the
active layers) costs 4 bytes per trainable parameter, not per model parameter.

How, with the trainer's own optimizer and loop unchanged:

* each trainable low-precision parameter ``p`` gets an fp32 master ``m`` that takes ``p``'s slot in
  the optimizer's ``param_groups``, so AdamW keys (and sizes) its state by ``m``: fp32 moments;
* backward still accumulates ``p.grad`` in ``p``'s dtype, so the trainer's clipping and grad-norm
  logging see the model as before; a step pre-hook (after clipping) moves each ``p.grad`` into
  ``m.grad`` as fp32, one parameter at a time, and a step post-hook writes ``m`` back into ``p``;
* at a switch, leaving parameters get their master written back, their slot back and their state
  moved onto ``p`` (where ``optimizer_state`` releases or keeps it); arriving ones get a master from ``p``;
* parameters already in fp32 (Axolotl upcasts the embedding and head) are their own master.

Checkpoints: ``Optimizer.load_state_dict`` casts every state tensor to the dtype of the parameter in
the slot, which on resume is the bf16 ``p``, but keeps a parameter group's own keys as saved. So a
state-dict post-hook adds to each group, under :data:`CHECKPOINT_KEY`, the masters and their fp32
moments by slot (the same tensors, saved once), and :meth:`MasterWeights.attach` takes them out
again before the first step: a resumed run continues bit for bit. The trainer's ``optimizer.pt``
carries them, so every resume path (Trainer, Axolotl) works, and the file stays a plain AdamW state.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from lisa_plugin.core.optimizer_state import adamw_state_bound, unwrap_optimizer

LOW_PRECISION = (torch.bfloat16, torch.float16)
CHECKPOINT_KEY = "lisa_fp32_masters"
# torch's AdamW/Adam keep plain tensors in state and read only `.grad`: a swapped slot is all they see.
SUPPORTED_OPTIMIZER_CLASSES = ("AdamW", "Adam")


def is_low_precision(p: torch.Tensor) -> bool:
    return p.dtype in LOW_PRECISION


def master_state_bound(params: Iterable[nn.Parameter]) -> int:
    """Bytes of optimizer state under ``master_weights: fp32``: per low-precision parameter an fp32
    master and two fp32 moments (12 bytes) plus the 4-byte step; fp32 parameters as plain AdamW."""
    total = 0
    for p in params:
        total += 12 * p.numel() + 4 if is_low_precision(p) else adamw_state_bound([p])
    return total


def setup_problems(params: Iterable[nn.Parameter], *, fp16_amp: bool, sharded: bool, multi_process: bool) -> list[str]:
    """Why ``master_weights: fp32`` cannot run here (empty: it can); ``params`` are all LISA may train."""
    problems = []
    if sharded:
        problems.append(
            "FSDP2 keeps its own sharded fp32 parameters (MixedPrecisionPolicy(param_dtype=torch.bfloat16)); "
            "use that and `lisa.master_weights: none`"
        )
    if multi_process and not sharded:
        problems.append("more than one process (DDP) is not supported yet (untested); train in one process")
    if fp16_amp:
        problems.append(
            "`fp16: true` (AMP with a gradient scaler) unscales the gradients of the optimizer's parameters, "
            "which are the masters and have none at clipping time; load the model in fp16/bf16 and train "
            "with `bf16: true`, or without AMP"
        )
    if not any(is_low_precision(p) for p in params):
        problems.append(
            "every parameter LISA trains is already float32, so there is nothing to keep a master copy of; "
            "load the model in bfloat16 or float16 (Axolotl: `bf16: true`), or set `lisa.master_weights: none`"
        )
    return [f"lisa.master_weights: fp32: {p}" for p in problems]


class MasterWeights:
    """The fp32 masters of the trainable low-precision parameters of one optimizer."""

    def __init__(self) -> None:
        self._masters: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}  # id(p) -> (p, m)
        self._loaded: dict[int, torch.Tensor] = {}  # masters read from a checkpoint, by id(p)
        self._optimizer: torch.optim.Optimizer | None = None
        self._handles: list = []
        self._stepped: list[tuple[nn.Parameter, torch.Tensor]] = []

    # -- lifecycle ----------------------------------------------------------------

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Hook into ``optimizer`` (once); take over masters a loaded checkpoint carries."""
        inner = unwrap_optimizer(optimizer)
        if inner is self._optimizer:
            return
        if self._optimizer is not None:
            raise ValueError("lisa.master_weights: the masters belong to another optimizer; call close() first")
        if type(inner).__name__ not in SUPPORTED_OPTIMIZER_CLASSES:
            raise ValueError(
                f"lisa.master_weights: fp32 supports torch's AdamW/Adam (`optimizer: adamw_torch` or "
                f"`adamw_torch_fused`), not {type(inner).__module__}.{type(inner).__name__}"
            )
        self._optimizer = inner
        self._take_loaded_copies()
        self._handles = [
            inner.register_step_pre_hook(self._grads_to_masters),
            inner.register_step_post_hook(self._masters_to_model),
            inner.register_state_dict_post_hook(self._add_fp32_copies),
        ]

    def close(self) -> None:
        """Write every master back, give the slots back and remove the hooks (end of training)."""
        self.retire([p for p, _ in self._masters.values()])
        for handle in self._handles:
            handle.remove()
        self._handles, self._optimizer, self._loaded = [], None, {}

    @property
    def masters(self) -> dict[int, tuple[nn.Parameter, torch.Tensor]]:
        return dict(self._masters)

    def master_bytes(self) -> int:
        return sum(m.numel() * m.element_size() for _, m in self._masters.values())

    # -- switches -----------------------------------------------------------------

    @torch.no_grad()
    def adopt(self, params: Iterable[nn.Parameter]) -> None:
        """Give each low-precision parameter in ``params`` without one a master in its optimizer slot."""
        slots = self._slot_index()
        for p in params:
            if not is_low_precision(p) or id(p) in self._masters or id(p) not in slots:
                continue
            loaded = self._loaded.pop(id(p), None)
            m = loaded.clone() if loaded is not None else p.detach().to(torch.float32, copy=True)
            state = self._optimizer.state.pop(p, None)
            if state:
                self._optimizer.state[m] = {k: _as_fp32(k, v) for k, v in state.items()}
            group, i = slots[id(p)]
            group["params"][i] = m
            self._masters[id(p)] = (p, m)
        self._loaded.clear()  # a checkpoint's masters serve only the set active when it was saved

    @torch.no_grad()
    def retire(self, params: Iterable[nn.Parameter]) -> None:
        """Write the masters of ``params`` back, put ``p`` back in its slot with the (fp32) state."""
        leaving = [self._masters.pop(id(p)) for p in params if id(p) in self._masters]
        if not leaving:
            return
        slots = self._slot_index()
        for p, m in leaving:
            p.copy_(m)
            state = self._optimizer.state.pop(m, None)
            if state:
                self._optimizer.state[p] = state
            group, i = slots[id(m)]
            group["params"][i] = p
            m.grad = None

    # -- optimizer hooks --------------------------------------------------------------

    def _grads_to_masters(self, optimizer, args, kwargs) -> None:
        self._stepped = []
        for p, m in self._masters.values():
            if p.grad is not None:
                m.grad = p.grad.to(torch.float32)
                p.grad = None  # one low-precision gradient freed as each fp32 one is made
                self._stepped.append((p, m))

    @torch.no_grad()
    def _masters_to_model(self, optimizer, args, kwargs) -> None:
        for p, m in self._stepped:
            p.copy_(m)
            m.grad = None
        self._stepped = []

    def _add_fp32_copies(self, optimizer, state_dict: dict) -> dict:
        by_slot = {id(m): m for _, m in self._masters.values()}
        for saved_group, group in zip(state_dict["param_groups"], optimizer.param_groups):
            copies = {}
            for i, q in enumerate(group["params"]):
                if id(q) in by_slot:
                    moments = {k: v for k, v in optimizer.state.get(q, {}).items() if _is_fp32_moment(k, v)}
                    copies[i] = {**moments, "master": q}
            if copies:
                saved_group[CHECKPOINT_KEY] = copies  # a fresh dict of state_dict's own, never the live group
        return state_dict

    def _take_loaded_copies(self) -> None:
        """After ``load_state_dict`` (a resume): put the fp32 moments back, keep the masters for adopt."""
        for group in self._optimizer.param_groups:
            for i, saved in (group.pop(CHECKPOINT_KEY, None) or {}).items():
                p = group["params"][i]
                self._loaded[id(p)] = saved.pop("master").to(p.device)
                state = self._optimizer.state.get(p)
                if state:  # load_state_dict cast these to p's dtype: take the fp32 ones instead
                    state.update({k: v.to(p.device) for k, v in saved.items()})

    def _slot_index(self) -> dict[int, tuple[dict, int]]:
        return {id(q): (group, i) for group in self._optimizer.param_groups for i, q in enumerate(group["params"])}


def _is_fp32_moment(key: str, value: object) -> bool:
    return key != "step" and isinstance(value, torch.Tensor) and value.dtype == torch.float32


def _as_fp32(key: str, value: object) -> object:
    if key == "step" or not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return value
    return value.to(torch.float32)
