"""What the built-in strategies share: per-switch generators, weighted sets, the gradient tally.

Third-party strategies may use these too; none of them touches global random state.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def switch_rng(seed: int, switch_index: int) -> np.random.Generator:
    """A generator that depends on nothing but ``(seed, switch_index)``.

    Seeding per switch (instead of drawing from one long-lived stream) is what makes
    a resumed run land on the same sequence without replaying earlier draws, and
    what keeps every rank in agreement without any communication.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, switch_index]))


def inclusion_probabilities(weights: Sequence[float], n_layers: int) -> np.ndarray:
    """Per-layer probabilities of being in the active set, proportional to ``weights``.

    They sum to ``n_layers`` (each set holds that many layers); a layer whose share
    would exceed 1 is active in every interval and the rest is shared among the others
    in proportion to their weights. Zero-weight layers are never active unless fewer
    than ``n_layers`` layers have a positive weight (then they fill the set evenly).
    """
    w = np.asarray(weights, dtype=float)
    if w.size and w.max() > 0:
        w = w / w.max()  # only ratios matter; [1e308] * 6 must not overflow the sums below
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


def sample_weighted(weights: Sequence[float], n_layers: int, rng: np.random.Generator) -> list[int]:
    """``n_layers`` layers, layer i active in a share of intervals proportional to ``weights[i]``."""
    return sample_with_inclusion(inclusion_probabilities(weights, n_layers), n_layers, rng)


def check_weights(
    weights: Sequence[float] | None, num_layers: int | None, key: str = "lisa.weights"
) -> list[float]:
    """The per-layer weights, validated (against the model's layer count once it is known)."""
    expected = f"{num_layers} non-negative numbers, one per decoder layer" if num_layers else "one per decoder layer"
    if weights is None:
        raise ValueError(f"{key}: missing; expected {expected}")
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise ValueError(f"{key}: {weights!r}; expected a list of numbers, {expected}")
    if any(isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) for w in weights):
        raise ValueError(f"{key}: {list(weights)!r}; expected {expected}: numbers (not true/false or text)")
    weights = [float(w) for w in weights]
    if num_layers is not None and len(weights) != num_layers:
        raise ValueError(
            f"{key}: {len(weights)} weights given ({weights}); expected one per decoder layer, {num_layers}"
        )
    if not weights or any(not np.isfinite(w) or w < 0 for w in weights) or not any(weights):
        raise ValueError(f"{key}: {weights}; expected {expected}: finite, non-negative, not all zero")
    return weights


def record_gradient_norms(state: dict[str, Any], norms: dict[int, float]) -> None:
    """Add one optimizer step's per-layer gradient norms to the interval's tally.

    Only for a strategy whose state asked for it (``observe_gradients``, see the
    ``lisa_select_layers`` hookspec); ``LayerSwitcher`` calls this before every optimizer step.
    """
    if not state.get("observe_gradients"):
        return
    for layer, norm in norms.items():
        if np.isfinite(norm):
            state["grad_norm_sum"][layer] += float(norm)
            state["grad_norm_count"][layer] += 1
