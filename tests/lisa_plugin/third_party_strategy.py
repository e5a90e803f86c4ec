"""A strategy from outside lisa_plugin, registered through pluggy (via LISA_PLUGINS in tests), with an option."""

from pydantic import BaseModel, Field

from lisa_plugin import hookimpl


class CountdownOptions(BaseModel):
    countdown_stride: int = Field(1, ge=1, description="layers to step down per switch")


@hookimpl
def lisa_strategy_names():
    return ["countdown"]


@hookimpl
def lisa_strategy_options(strategy):
    return CountdownOptions if strategy == "countdown" else None


@hookimpl
def lisa_select_layers(strategy, num_layers, n_layers, switch_index, options):
    if strategy != "countdown":
        return None
    top = num_layers - 1 - (switch_index * options["countdown_stride"] % num_layers)
    return [(top - k) % num_layers for k in range(n_layers)]
