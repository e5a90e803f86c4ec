"""The LISA algorithm, free of any trainer: torch and numpy only, no transformers or Axolotl.

* :mod:`~lisa_plugin.core.layers`: where the decoder layers are; the E / layers / H partition;
* :mod:`~lisa_plugin.core.switching`: :class:`LayerSwitcher`, which applies an interval's active set;
* :mod:`~lisa_plugin.core.optimizer_state`: releasing and measuring AdamW state;
* :mod:`~lisa_plugin.core.master_weights`: ``lisa.master_weights: fp32``, fp32 masters for the trainable set of a
  bf16/fp16 model;
* :mod:`~lisa_plugin.core.eh_state`: ``lisa.eh_state: 8bit``, bitsandbytes' 8-bit state for E and H only;
* :mod:`~lisa_plugin.core.history`: the ``lisa_history.json`` records (from :mod:`lisa_formats.history`);
* :mod:`~lisa_plugin.core.distributed`: DDP gradient sync of the active layers.
"""
