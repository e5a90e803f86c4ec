"""``profile``: ``weighted`` with the weights read from a ``lisa-plugin norms`` profile.

E.g. to give each decoder layer the share of training a LoRA run gave its update. The
profile is read when the config is validated (to fail early, naming the key) and once
more at start, when the weights are resolved against the model and recorded in the
run's history; never again during training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field, model_validator

from lisa_formats.norms import profile_path, profile_weights, read_profile_run
from lisa_plugin import hookimpl
from lisa_plugin.strategies import weighted
from lisa_plugin.strategies.sampling import check_weights

NAME = "profile"


class ProfileOptions(BaseModel):
    profile: str = Field(
        description="path of a `norms.json` written by `lisa-plugin norms` (or its folder); the "
        "decoder-layer update norms of one of its runs are the weights"
    )
    profile_run: str | None = Field(
        None, description="which run of the profile to follow; needed when it holds several"
    )

    @model_validator(mode="after")
    def _readable(self) -> "ProfileOptions":
        # fails here, naming the key, not at train start: the file, its shape and its decoder-layer norms
        chosen = read_profile_run(self.profile, self.profile_run)
        check_weights(chosen.decoder_norms(), None, key=f"lisa.profile ({self.profile}, run {chosen.name!r})")
        return self


@hookimpl
def lisa_strategy_names() -> list[str]:
    return [NAME]


@hookimpl
def lisa_strategy_options(strategy: str) -> type[BaseModel] | None:
    return ProfileOptions if strategy == NAME else None


@hookimpl
def lisa_strategy_resolve(strategy: str, options: dict[str, Any], num_layers: int) -> dict[str, Any] | None:
    if strategy != NAME:
        return None
    path, run = options.get("profile"), options.get("profile_run")
    weights = check_weights(profile_weights(path, run, num_layers), num_layers, key=f"lisa.profile ({path})")
    return {"weights": weights, "profile": str(profile_path(path)), "profile_run": run}


@hookimpl
def lisa_select_layers(
    strategy: str, n_layers: int, rng: np.random.Generator, resolved: dict[str, Any]
) -> list[int] | None:
    # drawn exactly as `weighted` draws, from the weights resolved out of the profile
    return weighted.lisa_select_layers(weighted.NAME, n_layers, rng, resolved) if strategy == NAME else None
