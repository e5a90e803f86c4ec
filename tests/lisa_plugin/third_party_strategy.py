"""A strategy from outside lisa_plugin, registered through pluggy (via LISA_PLUGINS in tests)."""

from lisa_plugin import hookimpl


@hookimpl
def lisa_strategy_names():
    return ["countdown"]


@hookimpl
def lisa_select_layers(strategy, num_layers, n_layers, switch_index):
    if strategy != "countdown":
        return None
    top = num_layers - 1 - (switch_index % num_layers)
    return [(top - k) % num_layers for k in range(n_layers)]
