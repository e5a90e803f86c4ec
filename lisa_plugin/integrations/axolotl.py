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

from lisa_plugin.config import LisaConfig
from lisa_plugin.core.optimizer_state import SUPPORTED_OPTIMIZER_NAMES
from lisa_plugin.core.switching import prepare_model
from lisa_plugin.integrations.callback import LISACallback
from lisa_plugin.manager import get_plugin_manager

LOG = logging.getLogger("lisa_plugin")


class LISAPlugin(BasePlugin):
    """``plugins: [lisa_plugin.LISAPlugin]`` plus a ``lisa:`` block turns a full fine-tune into LISA."""

    def get_input_args(self) -> str:
        return "lisa_plugin.integrations.axolotl.LisaArgs"

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


# Axolotl keys that cannot be combined with a `lisa:` block, and why.
_ADAPTERS_REFUSED = ("lora", "qlora")
_BUILTIN_LISA_KEYS = ("lisa_n_layers", "lisa_step_interval", "lisa_layers_attribute")


class LisaArgs(BaseModel):
    """Axolotl input args contributed by ``LISAPlugin`` (mixed into Axolotl's config model)."""

    lisa: LisaConfig | None = Field(
        None, description="LISA layerwise sampling; the plugin does nothing without this block"
    )

    @model_validator(mode="before")
    @classmethod
    def _compatible_with_rest_of_config(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("lisa"):
            return data
        problems = []
        adapter = data.get("adapter")
        if adapter in _ADAPTERS_REFUSED:
            problems.append(
                f"`adapter: {adapter}` cannot be combined with `lisa:`; LISA trains full "
                "parameters of sampled layers. Remove `adapter` for LISA, or remove `lisa:` for LoRA"
            )
        builtin = [k for k in _BUILTIN_LISA_KEYS if data.get(k) not in (None, "")]
        if builtin:
            problems.append(
                f"{', '.join(builtin)} configure Axolotl's built-in LISA callback; use only the "
                "`lisa:` block (n_layers, interval_steps, layers_path) with lisa_plugin"
            )
        if data.get("deepspeed"):
            problems.append(
                "`deepspeed` cannot be combined with `lisa:`: DeepSpeed builds its optimizer "
                "partitions once, at engine init, from the parameters trainable then; ZeRO-1/2 then "
                "fill zero gradients for parameters without one, so frozen layers keep moving through "
                "momentum and weight decay and all their optimizer state stays allocated, and ZeRO-3 "
                "never re-partitions when LISA switches layers. Remove `deepspeed` and launch with "
                "DDP (`accelerate launch` with an accelerate config of `distributed_type: MULTI_GPU`), "
                "which LISA supports"
            )
        if data.get("fsdp") or data.get("fsdp_config"):
            problems.append(
                "`fsdp`/`fsdp_config` cannot be combined with `lisa:`: FSDP fixes at wrap time which "
                "flat parameters it reduces and shards, while LISA changes the trainable layers every "
                "interval. Remove `fsdp`/`fsdp_config` and launch with DDP (`accelerate launch` with "
                "an accelerate config of `distributed_type: MULTI_GPU`), which LISA supports"
            )
        optimizer = data.get("optimizer")
        if optimizer is not None and str(optimizer) not in SUPPORTED_OPTIMIZER_NAMES:
            problems.append(
                f"`optimizer: {optimizer}` is not supported with `lisa:`; LISA frees and "
                f"recreates per-parameter AdamW state. Use one of {', '.join(SUPPORTED_OPTIMIZER_NAMES)}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return data
