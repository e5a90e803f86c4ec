"""The extension points of lisa_plugin, as pluggy hook specifications.

Each function below is a contract, not code: its docstring says what an
implementation receives and what it must return. Implementations are marked with
``lisa_plugin.hookimpl`` and may accept any subset of the arguments, so new
arguments can be added here without breaking existing plugins.

The project's own behaviour (every built-in strategy, the layer finder for the
common architectures, the switch logger) is registered through these same hooks,
exactly as a third-party package registered through the ``lisa_plugin`` entry
point group would be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import pluggy

if TYPE_CHECKING:
    import numpy as np
    import torch
    from pydantic import BaseModel

    from lisa_plugin.core.history import SwitchEvent

hookspec = pluggy.HookspecMarker("lisa_plugin")


# -- sampling strategies --------------------------------------------------------


@hookspec
def lisa_strategy_names() -> list[str]:
    """Names of the sampling strategies this plugin provides.

    Used to validate ``lisa.strategy`` and to list the choices in error messages.

    :return: the strategy names this plugin answers to in :func:`lisa_select_layers`.
    """


@hookspec(firstresult=True)
def lisa_strategy_options(strategy: str) -> "type[BaseModel] | None":
    """Declare the ``lisa:`` keys a strategy owns, as a pydantic model.

    The user writes them flat beside the common keys (``lisa: {strategy: NAME, KEY: ...}``);
    they are validated by this model when the config is (Axolotl's config validation, or
    ``LisaConfig``), with errors naming the key. A key that belongs to no strategy, or to
    another one than the selected strategy, is refused. Defaults of the model are filled in.

    :param strategy: a strategy name; return ``None`` unless it is yours.
    :return: a ``pydantic.BaseModel`` subclass whose fields are your keys (give each a
        default, a ``Field(description=...)`` and constraints such as ``ge=``), or ``None``
        when ``strategy`` is not yours or takes no options.
    """


@hookspec(firstresult=True)
def lisa_strategy_resolve(strategy: str, options: dict[str, Any], num_layers: int) -> "dict[str, Any] | None":
    """Resolve, once at start, what a strategy derives from its options and the model.

    Called when the model is loaded (so a bad input fails before training) and when the
    switcher is built. The result is recorded in ``lisa_history.json`` as
    ``strategy_resolved``, restored on resume, and passed to every
    :func:`lisa_select_layers` call as ``resolved``: e.g. ``weighted`` checks its weights
    against the layer count and ``profile`` reads its profile file here, never per switch.

    :param strategy: the configured strategy name; return ``None`` unless it is yours.
    :param options: the whole ``lisa:`` block as a dict, your options validated.
    :param num_layers: how many decoder layers the model has.
    :return: a JSON-serialisable dict, or ``None`` if ``strategy`` is not yours or needs nothing.
    """


@hookspec(firstresult=True)
def lisa_select_layers(
    strategy: str,
    num_layers: int,
    n_layers: int,
    switch_index: int,
    seed: int,
    rng: "np.random.Generator",
    options: dict[str, Any],
    state: dict[str, Any],
    resolved: dict[str, Any],
) -> Sequence[int] | None:
    """Pick the decoder layers that are trainable during one interval.

    Called once per switch. ``rng`` is freshly seeded from ``(seed, switch_index)``,
    so an implementation that draws only from ``rng`` makes the sequence of active
    sets a pure function of the seed: identical on every rank and after a resume.

    :param strategy: the configured strategy name; return ``None`` unless it is yours.
    :param num_layers: how many decoder layers the model has (indices ``0..num_layers-1``).
    :param n_layers: how many layers to return (gamma).
    :param switch_index: 0 for the first interval, then 1, 2, ...
    :param seed: the seed of the layer sequence, for a strategy whose draws span several
        switches (``cyclic`` seeds one permutation per block from ``(seed, block)``);
        derive generators only from it and ``switch_index``.
    :param rng: the generator to draw from; never use global random state.
    :param options: the whole ``lisa:`` block as a dict; your keys (see
        :func:`lisa_strategy_options`) validated, their defaults filled in.
    :param state: a JSON-serialisable dict this strategy may keep between switches;
        it is saved in checkpoints and restored on resume. A strategy that sets
        ``state["observe_gradients"] = True`` (and holds ``grad_norm_sum`` /
        ``grad_norm_count`` lists of length ``num_layers``) gets, before every optimizer
        step, each active layer's gradient norm added to them (see ``adaptive``).
    :param resolved: what :func:`lisa_strategy_resolve` returned at start (``{}`` if nothing).
    :return: ``n_layers`` distinct layer indices, or ``None`` if ``strategy`` is not yours.
    """


# -- model layout ---------------------------------------------------------------


@hookspec(firstresult=True)
def lisa_find_layers(model: "torch.nn.Module") -> "torch.nn.ModuleList | None":
    """Locate the list of decoder layers of ``model``.

    ``model`` is already unwrapped from DDP, ``torch.compile`` and PEFT wrappers.
    Third-party implementations are called before the built-in one, so a plugin can
    teach lisa_plugin a new architecture or override the built-in choice.

    :param model: the bare transformers model.
    :return: the ``ModuleList`` holding the decoder layers, or ``None`` if unknown.
    """


# -- observers ------------------------------------------------------------------


@hookspec
def lisa_on_switch(event: "SwitchEvent") -> None:
    """Observe a switch of the active layer set (every implementation is called).

    :param event: what was active before, what is active now, the trainable
        parameter count and the optimizer-state bytes before and after release.
    """
