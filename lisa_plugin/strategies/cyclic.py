"""``cyclic``: sampling without replacement, so no layer waits longer than two blocks.

Switches come in blocks of ``ceil(L / gamma)``; each block walks a fresh random
permutation of the layers gamma at a time. No options.
"""

from __future__ import annotations

import numpy as np

from lisa_plugin import hookimpl

NAME = "cyclic"

# Mixed into the seed of the generator of a cyclic block, so that block c's permutation
# is never the stream of switch c's own generator (both would be seeded from (seed, c)).
_CYCLIC_STREAM = 0x6379636C


@hookimpl
def lisa_strategy_names() -> list[str]:
    return [NAME]


@hookimpl
def lisa_select_layers(
    strategy: str, num_layers: int, n_layers: int, switch_index: int, seed: int, rng: np.random.Generator
) -> list[int] | None:
    """Block c = switch_index // ceil(L/gamma) walks its own permutation gamma layers a switch.

    The permutation depends only on (seed, c), so any switch can be computed alone (a
    resume needs no replay). When gamma does not divide L, the block's last switch
    holds the permutation's tail plus layers drawn from the rest with ``rng``.
    """
    if strategy != NAME:
        return None
    per_block = -(-num_layers // n_layers)
    block, position = divmod(switch_index, per_block)
    order = np.random.default_rng(np.random.SeedSequence([seed, block, _CYCLIC_STREAM])).permutation(num_layers)
    chosen = order[position * n_layers : (position + 1) * n_layers].tolist()
    if len(chosen) < n_layers:
        rest = np.setdiff1d(np.arange(num_layers), chosen)
        chosen += rng.choice(rest, size=n_layers - len(chosen), replace=False).tolist()
    return chosen
