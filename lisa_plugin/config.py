"""The ``lisa:`` block: the one source of truth for its keys, defaults and rules."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lisa_plugin.optimizer_state import SUPPORTED_OPTIMIZER_NAMES


class LisaConfig(BaseModel):
    """Settings of LISA; also the keyword arguments of ``LISACallback``."""

    model_config = ConfigDict(extra="forbid")

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
    weights: list[float] | None = Field(
        None,
        description="strategy weighted: one non-negative weight per decoder layer; layer i is "
        "active in a share of intervals proportional to weights[i]",
    )
    profile: str | None = Field(
        None, description="strategy profile: path of a `lisa_plugin norms` JSON whose update norms are the weights"
    )
    profile_run: str | None = Field(
        None, description="strategy profile: which run of the profile; needed when it holds several"
    )
    adaptive_decay: float = Field(
        0.9, ge=0.0, lt=1.0, description="strategy adaptive: decay of the per-layer gradient-norm average"
    )
    adaptive_epsilon: float = Field(
        0.1, gt=0.0, le=1.0, description="strategy adaptive: share of the sampling mass spread uniformly"
    )

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        from lisa_plugin.manager import strategy_names

        names = strategy_names()
        if value not in names:
            import difflib

            close = difflib.get_close_matches(value, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"lisa.strategy: unknown strategy {value!r}.{hint} Available: {', '.join(names)}"
            )
        return value

    @field_validator("weights")
    @classmethod
    def _usable_weights(cls, value: list[float] | None) -> list[float] | None:
        from lisa_plugin.strategies import check_weights

        return value if value is None else check_weights(value, None)  # the count: at model load

    @model_validator(mode="after")
    def _strategy_has_its_keys(self) -> "LisaConfig":
        if self.strategy == "weighted" and self.weights is None:
            raise ValueError("lisa.weights: missing; strategy 'weighted' needs one weight per decoder layer")
        if self.strategy == "profile":
            if self.profile is None:
                raise ValueError(
                    "lisa.profile: missing; strategy 'profile' needs the path of a `lisa_plugin norms` JSON"
                )
            from lisa_plugin.norms import read_profile_run

            read_profile_run(self.profile, self.profile_run)  # fails here, naming the key, not mid-run
        return self

    @field_validator("layers_path")
    @classmethod
    def _dotted_path(cls, value: str | None) -> str | None:
        if value is not None and not all(part.isidentifier() for part in value.split(".")):
            raise ValueError(
                f"lisa.layers_path: {value!r} is not a dotted attribute path like 'model.layers'"
            )
        return value


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
