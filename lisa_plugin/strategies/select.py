"""The one entry to the strategies: turn a switch index into an active set, and check it."""

from __future__ import annotations

from typing import Any, Sequence

import pluggy

from lisa_plugin.manager import get_plugin_manager, strategy_names
from lisa_plugin.strategies.options import unknown_strategy_message, validate_strategy_options
from lisa_plugin.strategies.sampling import switch_rng


class UnknownStrategyError(ValueError):
    """Raised when ``lisa.strategy`` names no registered strategy."""


def resolve_strategy(
    strategy: str, options: dict[str, Any], num_layers: int, pm: pluggy.PluginManager | None = None
) -> dict[str, Any]:
    """What ``strategy`` derives once, at start, from its options and the layer count.

    Recorded in ``lisa_history.json`` (``strategy_resolved``) and handed to every switch,
    so e.g. a profile file is read once, and a wrong weight count fails before training.
    """
    pm = pm or get_plugin_manager()
    resolved = pm.hook.lisa_strategy_resolve(strategy=strategy, options=options, num_layers=num_layers)
    return dict(resolved or {})


def select_active_layers(
    *,
    strategy: str,
    num_layers: int,
    n_layers: int,
    seed: int,
    switch_index: int,
    options: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    resolved: dict[str, Any] | None = None,
    pm: pluggy.PluginManager | None = None,
) -> list[int]:
    """Ask the registered strategies for the active set of one interval, and check it.

    ``LayerSwitcher`` passes validated ``options`` and the ``resolved`` inputs of the run.
    Without ``resolved`` (a one-off call), ``options`` are validated and resolved here first.
    """
    pm = pm or get_plugin_manager()
    if resolved is None:
        options, resolved = _prepare(strategy, options or {}, num_layers, pm)
    chosen: Sequence[int] | None = pm.hook.lisa_select_layers(
        strategy=strategy,
        num_layers=num_layers,
        n_layers=n_layers,
        switch_index=switch_index,
        seed=seed,
        rng=switch_rng(seed, switch_index),
        options=options or {},
        state=state if state is not None else {},
        resolved=resolved,
    )
    if chosen is None:
        raise UnknownStrategyError(unknown_strategy_message(strategy, strategy_names(pm)))
    active = sorted(int(i) for i in chosen)
    if len(set(active)) != n_layers or any(not 0 <= i < num_layers for i in active):
        raise ValueError(
            f"lisa.strategy {strategy!r} returned {list(chosen)} at switch {switch_index}; "
            f"expected {n_layers} distinct layer indices in [0, {num_layers})"
        )
    return active


def _prepare(
    strategy: str, options: dict[str, Any], num_layers: int, pm: pluggy.PluginManager
) -> tuple[dict[str, Any], dict[str, Any]]:
    from lisa_plugin.config import LisaConfig

    names = strategy_names(pm)
    if strategy not in names:
        raise UnknownStrategyError(unknown_strategy_message(strategy, names))
    common = LisaConfig.model_fields
    own = validate_strategy_options(strategy, options, common, pm)
    options = {**{k: v for k, v in options.items() if k in common}, "strategy": strategy, **own}
    return options, resolve_strategy(strategy, options, num_layers, pm)
