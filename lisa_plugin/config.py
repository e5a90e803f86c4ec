"""The ``lisa:`` block: the one source of truth for its keys, defaults and rules.

The keys every strategy shares are the fields below. A strategy's own keys sit flat beside
them (``lisa: {strategy: weighted, weights: [...]}``) and are validated by the options model
that strategy declares (``lisa_strategy_options``; see :mod:`lisa_plugin.strategies.options`).
``model_dump()`` holds both, the selected strategy's defaults filled in.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lisa_formats.suggest import closest


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
    seed: int | None = Field(None, ge=0, description="seed of the layer sequence; null: the run's `seed`")
    optimizer_state: Literal["release", "keep"] = Field(
        "release",
        description="release: drop AdamW state of deactivated layers; keep: keep it",
    )
    master_weights: Literal["none", "fp32"] = Field(
        "none",
        description="fp32: the model stays in bf16/fp16 and only the trainable set (E, H, active layers) "
        "gets an fp32 master copy, fp32 gradients at the update and fp32 AdamW state; none: train the weights "
        "in their own dtype",
    )
    eh_state: Literal["32bit", "8bit"] = Field(
        "32bit",
        description="8bit: bitsandbytes' blockwise 8-bit AdamW state for E and H only, decoder layers in 32 bits "
        "(needs `optimizer: adamw_bnb_8bit`); 32bit: the optimizer's own layout",
    )

    @field_validator("n_layers", "interval_steps", "seed", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any, info) -> Any:
        # pydantic would read `true` as 1: a YAML slip, not a layer count
        if isinstance(value, bool):
            raise ValueError(f"lisa.{info.field_name}: {value!r} is a boolean; expected an integer (e.g. 2)")
        return value

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


# --- Checking a whole Axolotl config: at plugin registration and by `lisa-plugin check` -------------

PLUGIN_NAME = "lisa_plugin.LISAPlugin"
LOG = logging.getLogger("lisa_plugin")
BLOCK_EXAMPLE = "lisa:\n  n_layers: 2\n  interval_steps: 20"


class LisaConfigError(ValueError, SystemExit):
    """A problem in the config that the user fixes in the YAML; the message says which key and how.

    Also a ``SystemExit`` (exit status 1): a command line that does not catch it, as
    ``axolotl preprocess``/``train`` do not, prints the message alone instead of a
    40-line traceback through Axolotl, click and pydantic ending in the same sentence.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = message


def plugin_listed(data: Mapping[str, Any]) -> bool:
    """Whether ``plugins:`` names :class:`~lisa_plugin.LISAPlugin` (by either of its import paths)."""
    plugins = data.get("plugins") or []
    return any(
        isinstance(name, str) and name.startswith("lisa_plugin.") and name.endswith(".LISAPlugin")
        for name in plugins
    )


def missing_block_message(data: Mapping[str, Any]) -> str:
    keys = {str(key).lower(): str(key) for key in data}
    near = closest("lisa", [k for k in keys if k != "plugins"])
    hint = f" Did you mean 'lisa' (found {keys[near]!r})?" if near else ""
    return (
        f"`plugins:` lists {PLUGIN_NAME} but the config has no `lisa:` block, so training would be a plain "
        f"full fine-tune.{hint} Add a block at the top level, e.g.\n{BLOCK_EXAMPLE}\n"
        "(every key and its default: README, 'Use LISA in your Axolotl config'), or remove the plugin from "
        "`plugins:`."
    )


def _pydantic_problem(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    if message.startswith("lisa.") or message.startswith("lisa:"):
        return message
    where = ".".join(["lisa", *(str(part) for part in error.get("loc", ()))])
    return f"{where}: {message} (got {error.get('input')!r})"


def block_problems(block: Any) -> list[str]:
    """What is wrong with the ``lisa:`` block itself, one sentence per problem (empty: nothing).

    ``lisa: {}`` is a block (LISA with every default, as Axolotl's validated config has it);
    only a missing key or ``lisa: null`` is none."""
    if block is None:
        return []
    if not isinstance(block, Mapping):
        return [f"lisa: expected a mapping of settings ({', '.join(LisaConfig.model_fields)}), got {block!r}"]
    try:
        LisaConfig(**{str(key): value for key, value in block.items()})
    except ValidationError as exc:
        return [_pydantic_problem(error) for error in exc.errors()]
    return []


# Axolotl keys that cannot be combined with a `lisa:` block, and why.
_ADAPTERS_REFUSED = ("lora", "qlora")
_BUILTIN_LISA_KEYS = ("lisa_n_layers", "lisa_step_interval", "lisa_layers_attribute")
_DDP_INSTEAD = (
    "launch with DDP (`accelerate launch` with an accelerate config of `distributed_type: MULTI_GPU`), "
    "which LISA supports"
)


def _sharding_problems(data: Mapping[str, Any]) -> list[str]:
    """DeepSpeed (any stage) and FSDP1 are refused; FSDP2 needs one unit per decoder layer."""
    problems = []
    if data.get("deepspeed"):
        problems.append(
            "`deepspeed` cannot be combined with `lisa:`: DeepSpeed builds its optimizer "
            "partitions once, at engine init, from the parameters trainable then; ZeRO-1/2 then "
            "fill zero gradients for parameters without one, so frozen layers keep moving through "
            "momentum and weight decay and all their optimizer state stays allocated, and ZeRO-3 "
            "never re-partitions or re-registers its gradient hooks when LISA switches layers (no "
            "public API does; DeepSpeed is not installed where lisa_plugin is tested, so no rebuild "
            "could be tested). Remove `deepspeed` and use `fsdp_version: 2` with `fsdp_config`, or "
            f"{_DDP_INSTEAD}"
        )
    if not (data.get("fsdp") or data.get("fsdp_config")):
        return problems
    fsdp_config = data.get("fsdp_config") or {}
    version = data.get("fsdp_version") or fsdp_config.get("fsdp_version") or fsdp_config.get("version") or 1
    wrap = fsdp_config.get("auto_wrap_policy")
    if str(version) != "2":
        problems.append(
            f"`fsdp_version: {version}` (FSDP1, Axolotl's default) cannot be combined with `lisa:`: FSDP1 "
            "flattens each wrapped module into one tensor that is reduced and updated as a whole, while "
            "LISA freezes single decoder layers. Set `fsdp_version: 2` (FSDP2 shards per parameter and "
            f"follows the switches), or remove `fsdp`/`fsdp_config` and {_DDP_INSTEAD}"
        )
    elif wrap != "TRANSFORMER_BASED_WRAP":
        problems.append(
            f"`fsdp_config.auto_wrap_policy: {wrap}` with `lisa:`: LISA under FSDP2 needs one `fully_shard` "
            "unit per decoder layer (a frozen layer then costs only its all-gather, and a tied "
            "embedding/head pair stays in the root unit). Set `auto_wrap_policy: TRANSFORMER_BASED_WRAP` "
            "and `transformer_layer_cls_to_wrap:` the decoder layer class (e.g. LlamaDecoderLayer)"
        )
    return problems


def _master_weights_problems(data: Mapping[str, Any]) -> list[str]:
    """``lisa.master_weights: fp32`` needs a bf16/fp16 model, no fp16 gradient scaler, torch's AdamW, no FSDP."""
    if not isinstance(data.get("lisa"), Mapping) or data["lisa"].get("master_weights") != "fp32":
        return []
    problems = []
    if data.get("fsdp") or data.get("fsdp_config"):
        problems.append("`lisa.master_weights: fp32` with FSDP: FSDP2 keeps its own fp32 sharded parameters "
                        "(mixed precision `param_dtype: bfloat16`); use that and `lisa.master_weights: none`")
    if data.get("fp16") is True and data.get("bf16") is not True:  # Axolotl drops fp16 when bf16 is on
        problems.append("`lisa.master_weights: fp32` with `fp16: true`: the AMP gradient scaler unscales the "
                        "optimizer's parameters (the masters), which have no gradient at clipping; use `bf16: true`")
    elif not any(data.get(key) is True for key in ("bf16", "bfloat16", "float16")) and data.get("bf16") != "auto":
        problems.append("`lisa.master_weights: fp32` on a float32 model has no effect: set `bf16: true` (the model "
                        "then loads in bfloat16) or `lisa.master_weights: none`")
    optimizer = data.get("optimizer")
    if optimizer is not None and str(optimizer) not in ("adamw_torch", "adamw_torch_fused"):
        problems.append(f"`lisa.master_weights: fp32` with `optimizer: {optimizer}`: the masters work with torch's "
                        "AdamW only; use `optimizer: adamw_torch` or `adamw_torch_fused`")
    return problems


def compatibility_problems(data: Mapping[str, Any]) -> list[str]:
    """What in the rest of an Axolotl config cannot go with a ``lisa:`` block (an empty one included)."""
    if data.get("lisa") is None:
        return []
    from lisa_plugin.core.optimizer_state import PAGED_OPTIMIZER_NAMES, PAGED_REFUSAL, SUPPORTED_OPTIMIZER_NAMES

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
    problems += _sharding_problems(data) + _master_weights_problems(data)
    if isinstance(data.get("lisa"), Mapping) and data["lisa"].get("eh_state") == "8bit":
        from lisa_plugin.core.eh_state import optimizer_name_problem

        problems += [p for p in [optimizer_name_problem(data.get("optimizer"))] if p]
    optimizer = data.get("optimizer")
    if str(optimizer) in PAGED_OPTIMIZER_NAMES:
        problems.append(f"`optimizer: {optimizer}` is paged, which LISA refuses: {PAGED_REFUSAL}")
    elif optimizer is not None and str(optimizer) not in SUPPORTED_OPTIMIZER_NAMES:
        problems.append(
            f"`optimizer: {optimizer}` is not supported with `lisa:`; LISA frees and "
            f"recreates per-parameter AdamW state. Use one of {', '.join(SUPPORTED_OPTIMIZER_NAMES)}"
        )
    return problems


def config_problems(data: Mapping[str, Any]) -> list[str]:
    """Everything LISA-related wrong with a whole Axolotl config (a parsed YAML mapping).

    Covers the plugin listed without a ``lisa:`` key (it would run a plain full fine-tune), a
    block without the plugin (Axolotl would ignore it), the block's own keys and values, and
    the other keys that cannot go with it. What only the model can tell (how many layers it
    has) is checked when it is loaded.
    """
    listed = plugin_listed(data)
    if listed and "lisa" not in data:
        return [missing_block_message(data)]
    problems = []
    if data.get("lisa") is not None and not listed:
        problems.append(
            f"the config has a `lisa:` block but `plugins:` does not list {PLUGIN_NAME}: Axolotl would "
            f"ignore the block and run a plain full fine-tune. Add\nplugins:\n  - {PLUGIN_NAME}"
        )
    block = block_problems(data.get("lisa"))
    if not block:
        problems += compatibility_problems(data) + _run_seed_problems(data)
        for warning in config_warnings(data):
            LOG.warning("%s", warning)
    return problems + block


def _run_seed_problems(data: Mapping[str, Any]) -> list[str]:
    """The run's ``seed`` seeds LISA's layer sequence when ``lisa.seed`` is unset: it must be usable."""
    if data.get("lisa") is None or (data.get("lisa") or {}).get("seed") is not None:
        return []
    seed = data.get("seed")
    if seed is None or (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        return []
    return [f"seed: {seed!r}; LISA seeds its layer sequence from the run's `seed` when `lisa.seed` is unset, so it "
            "must be an integer >= 0 (or set `lisa.seed`)"]


def config_warnings(data: Mapping[str, Any]) -> list[str]:
    """What a valid config with a ``lisa:`` block probably does not mean (logged by :func:`config_problems`)."""
    settings = settings_from_block(data.get("lisa")) if not block_problems(data.get("lisa")) else None
    max_steps = data.get("max_steps")
    if settings is None or isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps <= 0:
        return []
    if max_steps <= settings.interval_steps:
        return [f"max_steps: {max_steps} is not more than lisa.interval_steps ({settings.interval_steps}): LISA will "
                f"train one sampled set of {settings.n_layers} layer(s) for the whole run and never switch; lower "
                "`lisa.interval_steps` to see it switch"]
    return []


def settings_from_block(block: Any) -> "LisaConfig | None":
    """The settings a ``lisa:`` block asks for (``{}``: every default), or None when there is no block."""
    if block is None:
        return None
    if isinstance(block, LisaConfig):
        return block
    return LisaConfig(**dict(block))


def problems_message(source: Any, problems: list[str]) -> str:
    """One paragraph per problem, prefixed by the file (``source``) they were found in."""
    where = f"{source}: " if source else ""
    if len(problems) == 1:
        return f"{where}{problems[0]}"
    return f"{where}{len(problems)} problems with the LISA settings:\n" + "\n".join(f"- {p}" for p in problems)
