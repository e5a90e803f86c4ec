"""Sampling strategies, and the one function that turns a switch index into an active set.

Built-in strategies (their keys are documented in ``LisaConfig`` and the README):

* ``uniform``: the paper's: gamma distinct decoder layers drawn uniformly at random
  every interval (Pan et al. 2024, Algorithm 1).
* ``weighted``: layer i is active in a share of intervals proportional to
  ``lisa.weights[i]`` (capped at every interval).
* ``profile``: ``weighted`` with the weights read from a ``lisa_plugin norms`` profile,
  e.g. to give each layer the share of training a LoRA run gave its update.
* ``cyclic``: a fresh random permutation of the layers every ``ceil(L / gamma)``
  switches, walked gamma at a time, so no layer waits longer than two such blocks.
* ``adaptive``: like ``weighted``, with weights from an exponential average of each
  layer's gradient norm observed while it was active, mixed with a uniform floor.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pluggy

from lisa_plugin import hookimpl
from lisa_plugin.manager import get_plugin_manager, strategy_names

UNIFORM = "uniform"
WEIGHTED = "weighted"
PROFILE = "profile"
CYCLIC = "cyclic"
ADAPTIVE = "adaptive"

# Mixed into the seed of the generator of a cyclic block, so that block c's permutation
# is never the stream of switch c's own generator (both would be seeded from (seed, c)).
_CYCLIC_STREAM = 0x6379636C


@hookimpl
def lisa_strategy_names() -> list[str]:
    return [UNIFORM, WEIGHTED, PROFILE, CYCLIC, ADAPTIVE]


@hookimpl
def lisa_select_layers(
    strategy: str, num_layers: int, n_layers: int, rng: np.random.Generator
) -> list[int] | None:
    if strategy != UNIFORM:
        return None
    return rng.choice(num_layers, size=n_layers, replace=False).tolist()


# -- weighted and profile --------------------------------------------------------


def inclusion_probabilities(weights: Sequence[float], n_layers: int) -> np.ndarray:
    """Per-layer probabilities of being in the active set, proportional to ``weights``.

    They sum to ``n_layers`` (each set holds that many layers); a layer whose share
    would exceed 1 is active in every interval and the rest is shared among the others
    in proportion to their weights. Zero-weight layers are never active unless fewer
    than ``n_layers`` layers have a positive weight (then they fill the set evenly).
    """
    w = np.asarray(weights, dtype=float)
    pi = np.zeros_like(w)
    positive = w > 0
    if positive.sum() <= n_layers:
        pi[positive] = 1.0
        rest = ~positive
        pi[rest] = (n_layers - positive.sum()) / rest.sum() if rest.any() else 0.0
        return pi
    capped = np.zeros_like(positive)
    while True:
        free = positive & ~capped
        budget = n_layers - capped.sum()
        pi[free] = budget * w[free] / w[free].sum()
        pi[capped] = 1.0
        over = free & (pi > 1.0)
        if not over.any():
            return np.clip(pi, 0.0, 1.0)
        capped |= over


def sample_with_inclusion(pi: np.ndarray, n_layers: int, rng: np.random.Generator) -> list[int]:
    """``n_layers`` distinct layers such that layer i is chosen with probability ``pi[i]``.

    Randomised systematic sampling (Madow 1949): lay the ``pi`` of the layers, in a
    random order, end to end on [0, n_layers) and take the layers under the points
    u, u+1, ..., u+n_layers-1 for one uniform u. No interval of length <= 1 holds two
    points, so the layers are distinct, and the chance that one lands in layer i's
    interval is its length ``pi[i]``. (numpy's ``choice(replace=False, p=...)`` draws
    sequentially; its inclusion probabilities are not proportional to ``p``.)
    """
    order = rng.permutation(len(pi))
    edges = np.cumsum(pi[order])
    edges[-1] = n_layers  # rounding must not leave the last point outside
    points = rng.uniform() + np.arange(n_layers)
    picked = order[np.searchsorted(edges, points, side="right")]
    return sorted(int(i) for i in picked)


def check_weights(
    weights: Sequence[float] | None, num_layers: int | None, key: str = "lisa.weights"
) -> list[float]:
    """The per-layer weights, validated (against the model's layer count once it is known)."""
    expected = f"{num_layers} non-negative numbers, one per decoder layer" if num_layers else "one per decoder layer"
    if weights is None:
        raise ValueError(f"{key}: missing; expected {expected}")
    weights = [float(w) for w in weights]
    if num_layers is not None and len(weights) != num_layers:
        raise ValueError(
            f"{key}: {len(weights)} weights given ({weights}); expected one per decoder layer, {num_layers}"
        )
    if not weights or any(not np.isfinite(w) or w < 0 for w in weights) or not any(weights):
        raise ValueError(f"{key}: {weights}; expected {expected}: finite, non-negative, not all zero")
    return weights


def layer_weights(strategy: str, options: dict[str, Any], num_layers: int) -> list[float] | None:
    """The weights ``weighted`` or ``profile`` sample with; ``None`` for other strategies.

    Called when the layer count becomes known (model load, switcher construction), so a
    wrong ``lisa.weights`` or profile fails before training starts, and at every switch.
    """
    if strategy == WEIGHTED:
        return check_weights(options.get("weights"), num_layers)
    if strategy == PROFILE:
        from lisa_plugin.norms import profile_weights

        return check_weights(
            profile_weights(options.get("profile"), options.get("profile_run"), num_layers),
            num_layers,
            key=f"lisa.profile ({options.get('profile')})",
        )
    return None


@hookimpl(specname="lisa_select_layers")
def select_weighted(
    strategy: str, num_layers: int, n_layers: int, rng: np.random.Generator, options: dict[str, Any]
) -> list[int] | None:
    if strategy not in (WEIGHTED, PROFILE):
        return None
    weights = layer_weights(strategy, options, num_layers)
    return sample_with_inclusion(inclusion_probabilities(weights, n_layers), n_layers, rng)


# -- cyclic ------------------------------------------------------------------------


@hookimpl(specname="lisa_select_layers")
def select_cyclic(
    strategy: str, num_layers: int, n_layers: int, switch_index: int, seed: int, rng: np.random.Generator
) -> list[int] | None:
    """Block c = switch_index // ceil(L/gamma) walks its own permutation gamma layers a switch.

    The permutation depends only on (seed, c), so any switch can be computed alone (a
    resume needs no replay). When gamma does not divide L, the block's last switch
    holds the permutation's tail plus layers drawn from the rest with ``rng``.
    """
    if strategy != CYCLIC:
        return None
    per_block = -(-num_layers // n_layers)
    block, position = divmod(switch_index, per_block)
    order = np.random.default_rng(np.random.SeedSequence([seed, block, _CYCLIC_STREAM])).permutation(num_layers)
    chosen = order[position * n_layers : (position + 1) * n_layers].tolist()
    if len(chosen) < n_layers:
        rest = np.setdiff1d(np.arange(num_layers), chosen)
        chosen += rng.choice(rest, size=n_layers - len(chosen), replace=False).tolist()
    return chosen


# -- adaptive ----------------------------------------------------------------------


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


def record_gradient_norms(state: dict[str, Any], norms: dict[int, float]) -> None:
    """Add one optimizer step's per-layer gradient norms to the interval's tally."""
    if not state.get("observe_gradients"):
        return
    for layer, norm in norms.items():
        if np.isfinite(norm):
            state["grad_norm_sum"][layer] += float(norm)
            state["grad_norm_count"][layer] += 1


def adaptive_probabilities(state: dict[str, Any], epsilon: float) -> np.ndarray:
    """Sampling weights: (1 - epsilon) * EMA share + epsilon / L; unseen layers score the max."""
    ema = state["ema"]
    num_layers = len(ema)
    seen = [e for e in ema if e is not None]
    optimistic = max(seen) if seen else 1.0
    scores = np.array([optimistic if e is None else e for e in ema], dtype=float)
    share = scores / scores.sum() if scores.sum() > 0 else np.full(num_layers, 1.0 / num_layers)
    return (1.0 - epsilon) * share + epsilon / num_layers


@hookimpl(specname="lisa_select_layers")
def select_adaptive(
    strategy: str,
    num_layers: int,
    n_layers: int,
    switch_index: int,
    rng: np.random.Generator,
    options: dict[str, Any],
    state: dict[str, Any],
) -> list[int] | None:
    if strategy != ADAPTIVE:
        return None
    adaptive_state(state, num_layers)
    if state["last_switch"] == switch_index and state["last_active"] is not None:
        return list(state["last_active"])
    decay = float(options.get("adaptive_decay", 0.9))
    for layer in range(num_layers):
        count = state["grad_norm_count"][layer]
        if count:
            mean = state["grad_norm_sum"][layer] / count
            old = state["ema"][layer]
            state["ema"][layer] = mean if old is None else decay * old + (1.0 - decay) * mean
    state["grad_norm_sum"] = [0.0] * num_layers
    state["grad_norm_count"] = [0] * num_layers
    p = adaptive_probabilities(state, float(options.get("adaptive_epsilon", 0.1)))
    active = sample_with_inclusion(inclusion_probabilities(p, n_layers), n_layers, rng)
    state["last_switch"], state["last_active"] = switch_index, active
    return active


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
        seed=seed,
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
