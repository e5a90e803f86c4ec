"""The Axolotl glue: the ``lisa:`` input args, checking the model, handing over a callback.

``plugins: [lisa_plugin.LISAPlugin]`` makes Axolotl mix :class:`LisaArgs` into its config
model, call :meth:`LISAPlugin.post_model_load` once the model exists and
:meth:`LISAPlugin.add_callbacks_post_trainer` once the trainer does.
"""

from __future__ import annotations

import logging
from typing import Any

from axolotl.integrations.base import BasePlugin
from pydantic import BaseModel, Field, model_validator

from lisa_plugin.config import (
    LisaConfig, LisaConfigError, compatibility_problems, config_problems, plugin_listed, problems_message,
    settings_from_block,
)
from lisa_plugin.core.switching import prepare_model
from lisa_plugin.integrations.callback import LISACallback
from lisa_plugin.manager import get_plugin_manager

LOG = logging.getLogger("lisa_plugin")


class LISAPlugin(BasePlugin):
    """``plugins: [lisa_plugin.LISAPlugin]`` plus a ``lisa:`` block turns a full fine-tune into LISA."""

    def get_input_args(self) -> str:
        return "lisa_plugin.integrations.axolotl.LisaArgs"

    def register(self, cfg) -> None:
        # Axolotl calls this for `preprocess` and `train` alike, before it validates the config
        # (and for every plugin it has loaded in this process, listed in this config or not).
        if not plugin_listed(cfg):
            return
        problems = config_problems(cfg)
        if problems:
            raise LisaConfigError(problems_message(cfg.get("axolotl_config_path"), problems))

    def post_model_load(self, cfg, model) -> None:
        config = _lisa_config(cfg)
        if config is None:
            return
        # Fail at model load, before any data is tokenised for training, on what only the
        # model can tell: where the layers are, how many, and the strategy's inputs against them.
        prepare_model(model, config, get_plugin_manager(), model_name=cfg.base_model)

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
    return settings_from_block(cfg.get("lisa") if hasattr(cfg, "get") else getattr(cfg, "lisa", None))


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


class LisaArgs(BaseModel):
    """Axolotl input args contributed by ``LISAPlugin`` (mixed into Axolotl's config model)."""

    lisa: LisaConfig | None = Field(
        None, description="LISA layerwise sampling; the plugin does nothing without this block"
    )

    @model_validator(mode="before")
    @classmethod
    def _compatible_with_rest_of_config(cls, data: Any) -> Any:
        if isinstance(data, dict):
            problems = compatibility_problems(data)
            if problems:
                raise ValueError("; ".join(problems))
        return data
