"""``weighted``: layer i is active in a share of intervals proportional to ``lisa.weights[i]``.

A layer whose share would exceed every interval is active in every interval (see
:func:`~lisa_plugin.strategies.sampling.inclusion_probabilities`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field, field_validator

from lisa_plugin import hookimpl
from lisa_plugin.strategies.sampling import check_weights, sample_weighted

NAME = "weighted"


class WeightedOptions(BaseModel):
    weights: list[float] = Field(
        description="one non-negative weight per decoder layer, not all zero; layer i is active in a "
        "share of intervals proportional to weights[i]"
    )

    @field_validator("weights", mode="before")
    @classmethod
    def _usable(cls, value: Any) -> list[float]:  # before pydantic reads `true` as 1.0
        return check_weights(value, None)  # the count: once the model is loaded


@hookimpl
def lisa_strategy_names() -> list[str]:
    return [NAME]


@hookimpl
def lisa_strategy_options(strategy: str) -> type[BaseModel] | None:
    return WeightedOptions if strategy == NAME else None


@hookimpl
def lisa_strategy_resolve(strategy: str, options: dict[str, Any], num_layers: int) -> dict[str, Any] | None:
    if strategy != NAME:
        return None
    return {"weights": check_weights(options.get("weights"), num_layers)}


@hookimpl
def lisa_select_layers(
    strategy: str, n_layers: int, rng: np.random.Generator, resolved: dict[str, Any]
) -> list[int] | None:
    if strategy != NAME:
        return None
    return sample_weighted(resolved["weights"], n_layers, rng)
