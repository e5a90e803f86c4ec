"""Sampling strategies, and the one function that turns a switch index into an active set.

The built-in ``uniform`` strategy is the paper's: gamma distinct decoder layers drawn
uniformly at random every interval (Pan et al. 2024, Algorithm 1).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pluggy

from lisa_plugin import hookimpl
from lisa_plugin.manager import get_plugin_manager, strategy_names

UNIFORM = "uniform"


@hookimpl
def lisa_strategy_names() -> list[str]:
    return [UNIFORM]


@hookimpl
def lisa_select_layers(
    strategy: str, num_layers: int, n_layers: int, rng: np.random.Generator
) -> list[int] | None:
    if strategy != UNIFORM:
        return None
    return rng.choice(num_layers, size=n_layers, replace=False).tolist()


def switch_rng(seed: int, switch_index: int) -> np.random.Generator:
    """A generator that depends on nothing but ``(seed, switch_index)``.

    Seeding per switch (instead of drawing from one long-lived stream) is what makes
    a resumed run land on the same sequence without replaying earlier draws, and
    what keeps every rank in agreement without any communication.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, switch_index]))


class UnknownStrategyError(ValueError):
    """Raised when ``lisa.strategy`` names no registered strategy."""


def select_active_layers(
    *,
    strategy: str,
    num_layers: int,
    n_layers: int,
    seed: int,
    switch_index: int,
    options: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    pm: pluggy.PluginManager | None = None,
) -> list[int]:
    """Ask the registered strategies for the active set of one interval, and check it."""
    pm = pm or get_plugin_manager()
    chosen: Sequence[int] | None = pm.hook.lisa_select_layers(
        strategy=strategy,
        num_layers=num_layers,
        n_layers=n_layers,
        switch_index=switch_index,
        rng=switch_rng(seed, switch_index),
        options=options or {},
        state=state if state is not None else {},
    )
    if chosen is None:
        raise UnknownStrategyError(
            f"lisa.strategy: unknown strategy {strategy!r}. "
            f"Available: {', '.join(strategy_names(pm))}"
        )
    active = sorted(int(i) for i in chosen)
    if len(set(active)) != n_layers or any(not 0 <= i < num_layers for i in active):
        raise ValueError(
            f"lisa.strategy {strategy!r} returned {list(chosen)} at switch {switch_index}; "
            f"expected {n_layers} distinct layer indices in [0, {num_layers})"
        )
    return active
