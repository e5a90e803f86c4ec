"""Sampling strategies: which decoder layers train in each interval.

One module per built-in strategy, each a pluggy plugin registered exactly as a
third-party one is (see :data:`lisa_plugin.manager.BUILTIN_PLUGINS`), with its own
pydantic options model for the ``lisa:`` keys it owns:

* :mod:`~.uniform`: the paper's, gamma layers uniformly at random (no options);
* :mod:`~.weighted`: shares proportional to ``weights``;
* :mod:`~.profile`: ``weighted`` with the weights of a ``lisa-plugin norms`` profile
  (``profile``, ``profile_run``);
* :mod:`~.cyclic`: a fresh permutation per block of switches (no options);
* :mod:`~.adaptive`: shares from observed gradient norms (``adaptive_decay``, ``adaptive_epsilon``).

Shared pieces: :mod:`~.sampling` (seeded generators, weighted sets), :mod:`~.options`
(routing ``lisa:`` keys to the strategy that owns them) and :mod:`~.select` (the entry).
"""

from lisa_plugin.strategies.adaptive import adaptive_state
from lisa_plugin.strategies.sampling import (
    check_weights,
    inclusion_probabilities,
    record_gradient_norms,
    sample_with_inclusion,
    switch_rng,
)
from lisa_plugin.strategies.select import UnknownStrategyError, resolve_strategy, select_active_layers

__all__ = [
    "UnknownStrategyError",
    "adaptive_state",
    "check_weights",
    "inclusion_probabilities",
    "record_gradient_norms",
    "resolve_strategy",
    "sample_with_inclusion",
    "select_active_layers",
    "switch_rng",
]
