"""``adaptive``: layers with large gradients are sampled more, with a uniform floor so none starves.

Weights are an exponential average of each layer's gradient norm observed while it was
active (``adaptive_decay``), mixed with ``adaptive_epsilon / L`` of uniform mass; sets are
drawn like ``weighted``. The signal arrives through the strategy state (``observe_gradients``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from lisa_plugin import hookimpl
from lisa_plugin.strategies.sampling import sample_weighted

NAME = "adaptive"


class AdaptiveOptions(BaseModel):
    adaptive_decay: float = Field(
        0.9, ge=0.0, lt=1.0, description="decay of the per-layer exponential average of gradient norms"
    )
    adaptive_epsilon: float = Field(
        0.1, gt=0.0, le=1.0, description="share of the sampling mass spread evenly over all layers"
    )


@hookimpl
def lisa_strategy_names() -> list[str]:
    return [NAME]


@hookimpl
def lisa_strategy_options(strategy: str) -> type[BaseModel] | None:
    return AdaptiveOptions if strategy == NAME else None


def adaptive_state(state: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """Initialise (in place) the JSON-serialisable state of ``adaptive``.

    * ``observe_gradients``: asks ``LayerSwitcher.record_gradient_norms`` for the signal;
    * ``grad_norm_sum`` / ``grad_norm_count``: norms recorded since the last switch;
    * ``ema``: per-layer exponential average of interval-mean gradient norms (null: never seen);
    * ``last_switch`` / ``last_active``: the last decision, replayed when a resumed run asks
      for the interval it resumes in (the state then already holds its observations).
    """
    if state.get("num_layers") != num_layers:
        state.clear()
        state.update(
            observe_gradients=True,
            num_layers=num_layers,
            ema=[None] * num_layers,
            grad_norm_sum=[0.0] * num_layers,
            grad_norm_count=[0] * num_layers,
            last_switch=None,
            last_active=None,
        )
    return state


def adaptive_probabilities(state: dict[str, Any], epsilon: float) -> np.ndarray:
    """Sampling weights: (1 - epsilon) * EMA share + epsilon / L; unseen layers score the max."""
    ema = state["ema"]
    num_layers = len(ema)
    seen = [e for e in ema if e is not None]
    optimistic = max(seen) if seen else 1.0
    scores = np.array([optimistic if e is None else e for e in ema], dtype=float)
    share = scores / scores.sum() if scores.sum() > 0 else np.full(num_layers, 1.0 / num_layers)
    return (1.0 - epsilon) * share + epsilon / num_layers


def fold_interval(state: dict[str, Any], decay: float) -> None:
    """Fold the closing interval's mean gradient norms into each layer's average; reset the tally."""
    num_layers = state["num_layers"]
    for layer in range(num_layers):
        count = state["grad_norm_count"][layer]
        if count:
            mean = state["grad_norm_sum"][layer] / count
            old = state["ema"][layer]
            state["ema"][layer] = mean if old is None else decay * old + (1.0 - decay) * mean
    state["grad_norm_sum"] = [0.0] * num_layers
    state["grad_norm_count"] = [0] * num_layers


@hookimpl
def lisa_select_layers(
    strategy: str,
    num_layers: int,
    n_layers: int,
    switch_index: int,
    rng: np.random.Generator,
    options: dict[str, Any],
    state: dict[str, Any],
) -> list[int] | None:
    if strategy != NAME:
        return None
    adaptive_state(state, num_layers)
    if state["last_switch"] == switch_index and state["last_active"] is not None:
        return list(state["last_active"])
    fold_interval(state, float(options["adaptive_decay"]))
    active = sample_weighted(adaptive_probabilities(state, float(options["adaptive_epsilon"])), n_layers, rng)
    state["last_switch"], state["last_active"] = switch_index, active
    return active
