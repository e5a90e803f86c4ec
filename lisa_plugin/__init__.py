"""LISA (Layerwise Importance Sampled AdamW) for Axolotl and transformers.

Pan et al. 2024, "LISA: Layerwise Importance Sampling for Memory-Efficient Large
Language Model Fine-Tuning", https://arxiv.org/abs/2403.17919

* ``lisa_plugin.LISAPlugin``: the Axolotl plugin (``plugins: [lisa_plugin.LISAPlugin]``).
* ``lisa_plugin.LISACallback``: the same machinery for a plain ``transformers.Trainer``.
* ``lisa_plugin.hookimpl``: the marker for third-party strategies and layer finders.

Layout: ``core/`` the algorithm (torch and numpy only), ``strategies/`` one module per
sampling strategy, ``integrations/`` Axolotl and transformers glue, ``tools/`` developer
tools (CLI, tiny models, memory planner, norms, ablation); ``hookspecs.py`` and
``manager.py`` the pluggy extension points; ``config.py`` the ``lisa:`` block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

hookimpl = pluggy.HookimplMarker("lisa_plugin")

__all__ = ["hookimpl", "LISACallback", "LISAPlugin", "LisaConfig"]

if TYPE_CHECKING:
    from lisa_plugin.config import LisaConfig
    from lisa_plugin.integrations.axolotl import LISAPlugin
    from lisa_plugin.integrations.callback import LISACallback

# Importing Axolotl or transformers is slow; load each only when it is asked for.
_LAZY = {
    "LISACallback": "lisa_plugin.integrations.callback",
    "LISAPlugin": "lisa_plugin.integrations.axolotl",
    "LisaConfig": "lisa_plugin.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lisa_plugin' has no attribute {name!r}")
