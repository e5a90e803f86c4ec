"""The glue between the LISA algorithm and the trainers that run it.

* :mod:`~lisa_plugin.integrations.axolotl`: ``LISAPlugin`` and its ``lisa:`` input args;
* :mod:`~lisa_plugin.integrations.callback`: ``LISACallback``, a ``transformers.TrainerCallback``.
"""
