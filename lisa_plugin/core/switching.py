"""The LISA algorithm itself, free of any trainer: which layers train, and what that costs.

``LayerSwitcher`` owns one model's decoder layers and applies the active set of a
given interval to the model and the optimizer:

1. ask the strategy for the interval's layers (a pure function of seed and index);
2. set ``requires_grad`` on exactly those layers plus E/H, clear ``.grad`` elsewhere;
3. with ``optimizer_state="release"``, drop optimizer state of everything frozen.

The trainer glue (``integrations/callback.py``) only decides *when* to call :meth:`activate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy
import torch
from torch import nn

from lisa_plugin.core import optimizer_state
from lisa_plugin.core.history import LisaHistory, SwitchEvent
from lisa_plugin.core.layers import (
    ParameterPartition,
    check_n_layers,
    find_decoder_layers,
    layers_path_of,
    partition_parameters,
)
from lisa_plugin.core.master_weights import MasterWeights
from lisa_plugin.manager import get_plugin_manager
from lisa_plugin.strategies.sampling import record_gradient_norms
from lisa_plugin.strategies.select import resolve_strategy, select_active_layers

if TYPE_CHECKING:
    from lisa_plugin.config import LisaConfig


def prepare_model(
    model: nn.Module, config: "LisaConfig", pm: pluggy.PluginManager, model_name: str | None = None
) -> tuple[nn.ModuleList, dict[str, Any]]:
    """What only the loaded model can tell: its decoder layers, whether gamma fits, and the
    strategy's inputs resolved against its layer count (``lisa.weights``, a profile): once, at start.
    """
    layers = find_decoder_layers(model, config.layers_path, pm)
    check_n_layers(config.n_layers, len(layers), model_name or type(model).__name__)
    resolved = resolve_strategy(config.strategy, config.model_dump(), len(layers), pm)
    return layers, resolved


class LayerSwitcher:
    def __init__(
        self,
        model: nn.Module,
        config: "LisaConfig",
        seed: int,
        pm: pluggy.PluginManager | None = None,
    ) -> None:
        self.config = config
        self.seed = seed
        self.pm = pm or get_plugin_manager()
        layers, resolved = prepare_model(model, config, self.pm)
        self.partition: ParameterPartition = partition_parameters(model, layers)
        self._always = self.partition.always_trainable(config.train_embeddings, config.train_head)
        self.active: list[int] | None = None
        self.switch_index: int | None = None
        # fp32 masters of the trainable set (`master_weights: fp32`); None trains the weights in their dtype
        self.masters = MasterWeights() if config.master_weights == "fp32" else None
        self.history = LisaHistory(
            settings={**config.model_dump(), "seed": seed},
            num_layers=self.partition.num_layers,
            layers_path=config.layers_path or layers_path_of(model, layers),
            layer_params=[sum(p.numel() for p in group) for group in self.partition.layers],
            always_trainable_params=sum(p.numel() for p in self._always),
            strategy_resolved=resolved,
        )

    @property
    def num_layers(self) -> int:
        return self.partition.num_layers

    def interval_of(self, step: int) -> int:
        """Index of the interval that optimizer step ``step`` (0-based) belongs to."""
        return step // self.config.interval_steps

    def trainable_parameters(self, active: list[int]) -> list[nn.Parameter]:
        params = {id(p): p for p in self._always}
        for layer in active:
            params.update((id(p), p) for p in self.partition.layers[layer])
        return list(params.values())

    def all_parameters(self) -> list[nn.Parameter]:
        params = {id(p): p for group in self.partition.layers for p in group}
        params.update((id(p), p) for p in self.partition.embeddings + self.partition.head)
        return list(params.values())

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Every parameter LISA may switch on must be one the optimizer updates."""
        optimizer_state.check_supported(optimizer)
        inner = optimizer_state.unwrap_optimizer(optimizer)
        in_optimizer = {id(p) for group in inner.param_groups for p in group["params"]}
        missing = [i for i, group in enumerate(self.partition.layers) if any(id(p) not in in_optimizer for p in group)]
        if missing:
            raise ValueError(
                f"lisa: decoder layers {missing} have parameters the optimizer does not hold, so "
                "LISA could switch them on but they would never be updated. Were they frozen before "
                "the optimizer was built (e.g. by `unfrozen_parameters`)? LISA expects a full "
                "fine-tuning config and does the freezing itself"
            )

    def activate(self, switch_index: int, optimizer: torch.optim.Optimizer | None) -> SwitchEvent:
        """Make interval ``switch_index``'s layers the trainable set; return what changed."""
        active = select_active_layers(
            strategy=self.config.strategy,
            num_layers=self.num_layers,
            n_layers=self.config.n_layers,
            seed=self.seed,
            switch_index=switch_index,
            options=self.config.model_dump(),
            state=self.history.strategy_state,
            resolved=self.history.strategy_resolved,
            pm=self.pm,
        )
        before = self.state_bytes(optimizer)
        trainable = self.trainable_parameters(active)
        trainable_ids = {id(p) for p in trainable}
        frozen = [p for p in self.all_parameters() if id(p) not in trainable_ids]
        for p in frozen:
            p.requires_grad_(False)
            p.grad = None
        for p in trainable:
            p.requires_grad_(True)
        if self.masters is not None and optimizer is not None:
            self.masters.attach(optimizer)
            self.masters.retire(frozen)  # before releasing: their state moves back onto `p`
        if optimizer is not None and self.config.optimizer_state == "release":
            optimizer_state.release_state(optimizer, frozen)
        released = before - self.state_bytes(optimizer)
        if self.masters is not None and optimizer is not None:
            self.masters.adopt(trainable)
        event = SwitchEvent(
            step=switch_index * self.config.interval_steps,
            switch_index=switch_index,
            previous=self.active,
            active=active,
            num_layers=self.num_layers,
            trainable_params=sum(p.numel() for p in trainable),
            optimizer_state_bytes_before=before,
            optimizer_state_bytes=before - released,
            released_bytes=released,
        )
        self.active, self.switch_index = active, switch_index
        self.history.add(event)
        self.pm.hook.lisa_on_switch(event=event)
        return event

    def state_bytes(self, optimizer: torch.optim.Optimizer | None) -> int:
        """Optimizer state held now; with fp32 masters, the masters too (they exist only for the update)."""
        if optimizer is None:
            return 0
        masters = self.masters.master_bytes() if self.masters is not None else 0
        return optimizer_state.state_bytes(optimizer) + masters

    @property
    def observes_gradients(self) -> bool:
        """Whether the strategy asked (through its state) for per-layer gradient norms."""
        return bool(self.history.strategy_state.get("observe_gradients"))

    @torch.no_grad()
    def record_gradient_norms(self) -> dict[int, float]:
        """Add each active layer's gradient norm (before the optimizer step) to the strategy state.

        One norm per active parameter and one host sync per step: small beside the
        backward pass. The gradients are the reduced ones under DDP, and the norms of the
        whole (not local) gradient shards under FSDP2, so every rank records the same
        numbers and the ranks keep agreeing on the next set.
        """
        if not self.observes_gradients or self.active is None:
            return {}
        norms = {}
        for layer in self.active:
            grads = [p.grad for p in self.partition.layers[layer] if p.grad is not None]
            if grads:
                norms[layer] = torch.linalg.vector_norm(torch.stack([_whole_norm(g) for g in grads]))
        values = dict(zip(norms, torch.stack(list(norms.values())).tolist())) if norms else {}
        record_gradient_norms(self.history.strategy_state, values)
        return values

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue the history (and strategy state) saved in a checkpoint."""
        restored = LisaHistory.from_json(saved)
        # A key added to the lisa: block since the checkpoint was written had its default then.
        defaults = {name: field.default for name, field in type(self.config).model_fields.items()}
        restored.settings = {**{k: v for k, v in defaults.items() if k in self.history.settings}, **restored.settings}
        if restored.settings != self.history.settings:
            changed = sorted(
                k for k in set(restored.settings) | set(self.history.settings)
                if restored.settings.get(k) != self.history.settings.get(k)
            )
            raise ValueError(
                f"lisa: the checkpoint was trained with different LISA settings ({', '.join(changed)}: "
                f"{ {k: restored.settings.get(k) for k in changed} } then, "
                f"{ {k: self.history.settings.get(k) for k in changed} } now); resuming would not "
                "continue the same layer sequence"
            )
        self.history.switches = restored.switches
        self.history.strategy_state = restored.strategy_state
        if restored.strategy_resolved:  # the inputs the run started from, even if a profile changed since
            self.history.strategy_resolved = restored.strategy_resolved



def _whole_norm(grad: torch.Tensor) -> torch.Tensor:
    """The 2-norm of a gradient; of the whole tensor when it is an FSDP2 shard (a DTensor)."""
    norm = torch.linalg.vector_norm(grad.float())
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
