"""``uniform``, the paper's strategy: gamma distinct decoder layers drawn uniformly every interval.

Pan et al. 2024, Algorithm 1. No options.
"""

from __future__ import annotations

import numpy as np

from lisa_plugin import hookimpl

NAME = "uniform"


@hookimpl
def lisa_strategy_names() -> list[str]:
    return [NAME]


@hookimpl
def lisa_select_layers(strategy: str, num_layers: int, n_layers: int, rng: np.random.Generator) -> list[int] | None:
    if strategy != NAME:
        return None
    return rng.choice(num_layers, size=n_layers, replace=False).tolist()
