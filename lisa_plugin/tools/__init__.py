"""Developer tools around LISA, none of which training needs at run time.

* :mod:`~lisa_plugin.tools.cli`: the ``lisa-plugin`` command (``check``, ``train``, ``tiny``, ``norms``, ``ablate``);
* :mod:`~lisa_plugin.tools.tiny` and :mod:`~lisa_plugin.tools.corpus`: tiny offline models and
  the text we wrote to train their tokenizers;
* :mod:`~lisa_plugin.tools.axolotl_runner`: the shipped example configs and running ``axolotl train``,
  measured (peak RSS and wall time, through :mod:`~lisa_plugin.tools.measured_child`);
* :mod:`~lisa_plugin.tools.memory`: the memory planner (``lisa-memory``);
* :mod:`~lisa_plugin.tools.norms`: per-layer update norms of runs (``lisa-plugin norms``);
* :mod:`~lisa_plugin.tools.ablation`: a gamma/K grid trained and compared (``lisa-plugin ablate``).
"""
