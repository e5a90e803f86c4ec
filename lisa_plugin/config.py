"""The ``lisa:`` block: the one source of truth for its keys, defaults and rules.

The keys every strategy shares are the fields below. A strategy's own keys sit flat beside
them (``lisa: {strategy: weighted, weights: [...]}``) and are validated by the options model
that strategy declares (``lisa_strategy_options``; see :mod:`lisa_plugin.strategies.options`).
``model_dump()`` holds both, the selected strategy's defaults filled in.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class LisaConfig(BaseModel):
    """Settings of LISA; also the keyword arguments of ``LISACallback``."""

    # Extra keys are the strategy's options; `_strategy_options` checks every one of them.
    model_config = ConfigDict(extra="allow")

    n_layers: int = Field(2, ge=1, description="gamma: decoder layers trainable at a time")
    interval_steps: int = Field(
        20, ge=1, description="K: optimizer steps between re-sampling the active layers"
    )
    strategy: str = Field("uniform", description="name of a registered sampling strategy")
    layers_path: str | None = Field(
        None, description="dotted path to the decoder layer list; auto-detected when null"
    )
    train_embeddings: bool = Field(True, description="E: input embeddings always trainable")
    train_head: bool = Field(True, description="H: LM head (and final norm) always trainable")
    seed: int | None = Field(None, description="seed of the layer sequence; null: the run's `seed`")
    optimizer_state: Literal["release", "keep"] = Field(
        "release",
        description="release: drop AdamW state of deactivated layers; keep: keep it",
    )

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        from lisa_plugin.manager import strategy_names
        from lisa_plugin.strategies.options import unknown_strategy_message

        names = strategy_names()
        if value not in names:
            raise ValueError(unknown_strategy_message(value, names))
        return value

    @field_validator("layers_path")
    @classmethod
    def _dotted_path(cls, value: str | None) -> str | None:
        if value is not None and not all(part.isidentifier() for part in value.split(".")):
            raise ValueError(
                f"lisa.layers_path: {value!r} is not a dotted attribute path like 'model.layers'"
            )
        return value

    @model_validator(mode="after")
    def _strategy_options(self) -> "LisaConfig":
        from lisa_plugin.manager import get_plugin_manager
        from lisa_plugin.strategies.options import validate_strategy_options

        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        options = validate_strategy_options(self.strategy, extra, type(self).model_fields, get_plugin_manager())
        extra.clear()
        extra.update(options)
        return self
