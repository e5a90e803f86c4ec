"""The Axolotl glue: read the ``lisa:`` block, check the model, hand over a callback."""

from __future__ import annotations

import logging

from axolotl.integrations.base import BasePlugin

from lisa_plugin.callback import LISACallback
from lisa_plugin.config import LisaConfig
from lisa_plugin.layers import find_decoder_layers
from lisa_plugin.manager import get_plugin_manager
from lisa_plugin.strategies import layer_weights

LOG = logging.getLogger("lisa_plugin")


class LISAPlugin(BasePlugin):
    """``plugins: [lisa_plugin.LISAPlugin]`` plus a ``lisa:`` block turns a full fine-tune into LISA."""

    def get_input_args(self) -> str:
        return "lisa_plugin.config.LisaArgs"

    def post_model_load(self, cfg, model) -> None:
        config = _lisa_config(cfg)
        if config is None:
            return
        # Fail at model load, before any data is tokenised for training, on the two
        # things only the model can tell: where the layers are and how many.
        layers = find_decoder_layers(model, config.layers_path, get_plugin_manager())
        if config.n_layers > len(layers):
            raise ValueError(
                f"lisa.n_layers: {config.n_layers} is more than the {len(layers)} decoder layers "
                f"of {cfg.base_model}; expected 1..{len(layers)}"
            )
        layer_weights(config.strategy, config.model_dump(), len(layers))  # lisa.weights / lisa.profile

    def add_callbacks_post_trainer(self, cfg, trainer) -> list:
        config = _lisa_config(cfg)
        if config is None:
            return []
        _show_switch_log_lines()
        callback = LISACallback(**config.model_dump())
        if config.seed is None:
            callback.config.seed = cfg.seed if cfg.seed is not None else trainer.args.seed
        # Switch metrics go straight into trainer.log, so every reporter sees them; under
        # DDP the model is prepared here, before the trainer wraps it.
        callback.bind(trainer)
        LOG.info("LISA: %s", config.model_dump())
        return [callback]


def _lisa_config(cfg) -> LisaConfig | None:
    block = cfg.get("lisa") if hasattr(cfg, "get") else getattr(cfg, "lisa", None)
    if not block:
        return None
    if isinstance(block, LisaConfig):
        return block
    return LisaConfig(**dict(block))


def _show_switch_log_lines() -> None:
    # Axolotl's logger class filters every non-`axolotl.*` logger down to warnings; the
    # one-line-per-switch log is worth showing at INFO beside Axolotl's own output.
    for filt in list(LOG.filters):
        LOG.removeFilter(filt)
    LOG.setLevel(logging.INFO)
    if not LOG.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] [%(name)s] %(message)s"))
        LOG.addHandler(handler)
