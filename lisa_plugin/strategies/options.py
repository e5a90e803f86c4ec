"""Strategy options: each strategy validates the ``lisa:`` keys it owns with its own pydantic model.

The user writes them flat beside the common keys (``lisa: {strategy: weighted, weights: [...]}``).
A key that no strategy owns, or that belongs to another strategy than the selected one, is an
error naming the key, the strategy and the nearest valid key, instead of pydantic's
"Extra inputs are not permitted".
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pluggy
from pydantic import BaseModel, ValidationError

from lisa_formats.suggest import did_you_mean
from lisa_plugin.manager import strategy_names


class NoOptions(BaseModel):
    """The options of a strategy that declares none."""


def options_model(strategy: str, pm: pluggy.PluginManager) -> type[BaseModel]:
    """The options model a strategy declared through ``lisa_strategy_options`` (or none)."""
    return pm.hook.lisa_strategy_options(strategy=strategy) or NoOptions


def unknown_strategy_message(strategy: str, names: list[str]) -> str:
    return f"lisa.strategy: unknown strategy {strategy!r}.{did_you_mean(strategy, names)} Available: {', '.join(names)}"


def validate_strategy_options(
    strategy: str, given: Mapping[str, Any], common: Iterable[str], pm: pluggy.PluginManager
) -> dict[str, Any]:
    """The options of ``strategy`` from the ``lisa:`` keys in ``given``, validated, defaults filled.

    Keys in ``common`` (the strategy-independent ``LisaConfig`` fields) are skipped; a key of
    another strategy left at null (as a copied full block of defaults has them) counts as unset.
    """
    model = options_model(strategy, pm)
    common = list(common)
    own = {}
    for key, value in given.items():
        if key in common or (value is None and key not in model.model_fields):
            continue
        if key not in model.model_fields:
            raise ValueError(_misplaced(key, strategy, [*common, *model.model_fields], pm))
        own[key] = value
    try:
        return model.model_validate(own).model_dump()
    except ValidationError as exc:
        raise ValueError(_describe(exc, strategy, model)) from None


def _misplaced(key: str, strategy: str, valid: list[str], pm: pluggy.PluginManager) -> str:
    owners = [n for n in strategy_names(pm) if n != strategy and key in options_model(n, pm).model_fields]
    hint = did_you_mean(key, valid)
    if owners:
        return (
            f"lisa.{key}: an option of strategy {owners[0]!r}, not of {strategy!r} (the `lisa.strategy` "
            f"in use); set `strategy: {owners[0]}` or remove `{key}`.{hint}"
        )
    return f"lisa.{key}: unknown key.{hint} Keys with strategy {strategy!r}: {', '.join(valid)}"


def _describe(exc: ValidationError, strategy: str, model: type[BaseModel]) -> str:
    """Pydantic's errors in our wording: the key, the value seen, what is expected."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        where = f"lisa.{key}" if key else "lisa"
        message = err["msg"].removeprefix("Value error, ")
        if message.startswith("lisa."):
            lines.append(message)
        elif err["type"] == "missing":
            field = model.model_fields.get(key)
            need = f": {field.description}" if field is not None and field.description else ""
            lines.append(f"{where}: missing; strategy {strategy!r} needs it{need}")
        else:
            lines.append(f"{where}: {err.get('input')!r} for strategy {strategy!r}: {message}")
    return "; ".join(lines)
