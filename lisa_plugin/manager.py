"""Building the pluggy plugin manager: built-ins first, then third parties.

Third-party plugins arrive two ways:

* an installed package's entry point in the group ``lisa_plugin``
  (``[project.entry-points.lisa_plugin] my_strategy = "my_pkg.lisa_ext"``);
* the ``LISA_PLUGINS`` environment variable, a comma-separated list of importable
  module names, which is handy for a plugin that lives beside a config rather than
  in an installed package (and for tests).

``LISA_PLUGIN_DISABLE_AUTOLOAD=1`` skips the entry points, as pytest's
``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` does, so a broken third-party package can be
ruled out quickly.
"""

from __future__ import annotations

import functools
import importlib
import os

import pluggy

from lisa_plugin import hookspecs

PROJECT = "lisa_plugin"
ENV_PLUGINS = "LISA_PLUGINS"
ENV_DISABLE_AUTOLOAD = "LISA_PLUGIN_DISABLE_AUTOLOAD"

# The modules holding the project's own hook implementations: one per built-in strategy,
# the layer finder, the switch logger.
BUILTIN_PLUGINS = (
    "lisa_plugin.strategies.uniform",
    "lisa_plugin.strategies.weighted",
    "lisa_plugin.strategies.profile",
    "lisa_plugin.strategies.cyclic",
    "lisa_plugin.strategies.adaptive",
    "lisa_plugin.core.layers",
    "lisa_plugin.observers",
)


def new_plugin_manager(*, autoload: bool | None = None) -> pluggy.PluginManager:
    """Return a fresh manager with the built-ins and, unless disabled, third parties."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if autoload is None:
        autoload = os.environ.get(ENV_DISABLE_AUTOLOAD, "") in ("", "0", "false")
    if autoload:
        pm.load_setuptools_entrypoints(PROJECT)
    for name in filter(None, (m.strip() for m in os.environ.get(ENV_PLUGINS, "").split(","))):
        if pm.get_plugin(name) is None:
            try:
                module = importlib.import_module(name)
            except ImportError as exc:
                raise ImportError(
                    f"{ENV_PLUGINS} names module {name!r}, which cannot be imported: {exc}"
                ) from exc
            pm.register(module, name=name)
    pm.check_pending()
    return pm


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager (built once; ``register`` on it adds a plugin)."""
    return new_plugin_manager()


def strategy_names(pm: pluggy.PluginManager | None = None) -> list[str]:
    """Every strategy name any registered plugin answers to, sorted."""
    pm = pm or get_plugin_manager()
    names: set[str] = set()
    for provided in pm.hook.lisa_strategy_names():
        names.update(provided)
    return sorted(names)
