"""Finding the decoder layers of a model, and splitting its parameters into E, layers and H.

LISA treats a causal LM as three parts:

* E, the embeddings: every embedding table outside the decoder layers (token and,
  where the architecture has them, learned position embeddings);
* the decoder layers, one ``ModuleList``, of which gamma are trainable at a time;
* H, the head: the LM head and everything else outside the layers (the final norm).

Tied embeddings (one tensor serving as both input embedding and LM head) belong
to E *and* H; :func:`partition_parameters` reports them in both, and the tensor is
trainable when either ``train_embeddings`` or ``train_head`` is on.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

from torch import nn

from lisa_formats.norms import EMBEDDING, HEAD, LAYER
from lisa_plugin import hookimpl

# Attribute paths of the decoder layer list, tried in order on the unwrapped model.
KNOWN_LAYER_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2/3, Gemma, Phi-3, ...
    "model.language_model.layers",  # multimodal wrappers in transformers 5
    "transformer.h",  # GPT-2, Falcon, Bloom, GPT-J
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.layers",  # ChatGLM-style, MPT ("transformer.blocks" below)
    "transformer.blocks",
    "layers",  # a bare decoder model (LlamaModel, ...)
)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP/FSDP-style ``.module``, ``torch.compile``'s ``_orig_mod`` and PEFT wrappers."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module) and type(model).__name__ in (
            "DistributedDataParallel",
            "DataParallel",
            "FullyShardedDataParallel",
        ):
            model = model.module
        elif hasattr(model, "get_base_model") and hasattr(model, "peft_config"):
            model = model.get_base_model()
    return model


def resolve_path(model: nn.Module, path: str) -> object:
    """Follow a dotted attribute path (``"model.layers"``) from ``model``."""
    return operator.attrgetter(path)(model)


@hookimpl
def lisa_find_layers(model: nn.Module) -> nn.ModuleList | None:
    for path in KNOWN_LAYER_PATHS:
        try:
            found = resolve_path(model, path)
        except AttributeError:
            continue
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return found
    return None


class LayersNotFoundError(ValueError):
    """Raised when the decoder layers cannot be located."""


def check_n_layers(n_layers: int, num_layers: int, model_name: str) -> None:
    """``lisa.n_layers`` must fit the model, which only the loaded model can tell."""
    if n_layers > num_layers:
        raise ValueError(
            f"lisa.n_layers: {n_layers} is more than the {num_layers} decoder layers "
            f"of {model_name}; expected 1..{num_layers}"
        )


def find_decoder_layers(model: nn.Module, layers_path: str | None, pm) -> nn.ModuleList:
    """``layers_path`` when given, else the first ``lisa_find_layers`` implementation that knows."""
    bare = unwrap_model(model)
    if layers_path:
        try:
            found = resolve_path(bare, layers_path)
        except AttributeError as exc:
            raise LayersNotFoundError(
                f"lisa.layers_path: {layers_path!r} does not resolve on {type(bare).__name__} "
                f"({exc}); expected a dotted path to the ModuleList of decoder layers, "
                f"e.g. one of {', '.join(KNOWN_LAYER_PATHS[:5])}"
            ) from None
        if not isinstance(found, nn.ModuleList) or len(found) == 0:
            raise LayersNotFoundError(
                f"lisa.layers_path: {layers_path!r} resolves to {type(found).__name__}, "
                "expected a non-empty torch.nn.ModuleList of decoder layers"
            )
        return found
    found = pm.hook.lisa_find_layers(model=bare)
    if found is None:
        raise LayersNotFoundError(
            f"lisa: cannot find the decoder layers of {type(bare).__name__}; set "
            "lisa.layers_path to the dotted path of its ModuleList of decoder layers "
            "(see `print(model)`), or register a `lisa_find_layers` hook"
        )
    return found


@dataclass
class ParameterPartition:
    """The parameters of a model grouped the way LISA switches them."""

    layers: list[list[nn.Parameter]]
    embeddings: list[nn.Parameter] = field(default_factory=list)
    head: list[nn.Parameter] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def always_trainable(self, train_embeddings: bool, train_head: bool) -> list[nn.Parameter]:
        chosen: dict[int, nn.Parameter] = {}
        if train_embeddings:
            chosen.update((id(p), p) for p in self.embeddings)
        if train_head:
            chosen.update((id(p), p) for p in self.head)
        return list(chosen.values())

    def tied(self) -> list[nn.Parameter]:
        head_ids = {id(p) for p in self.head}
        return [p for p in self.embeddings if id(p) in head_ids]


def partition_parameters(model: nn.Module, layers: nn.ModuleList) -> ParameterPartition:
    """Split every parameter of ``model`` into embeddings, decoder layers and head."""
    bare = unwrap_model(model)
    layer_params = [list(layer.parameters()) for layer in layers]
    in_layers = {id(p) for group in layer_params for p in group}

    embedding_ids: set[int] = set()
    for module in bare.modules():
        if isinstance(module, nn.Embedding):
            embedding_ids.update(id(p) for p in module.parameters(recurse=False))
    get_input = getattr(bare, "get_input_embeddings", None)
    if callable(get_input) and get_input() is not None:
        embedding_ids.update(id(p) for p in get_input().parameters())
    output_ids: set[int] = set()
    get_output = getattr(bare, "get_output_embeddings", None)
    if callable(get_output) and get_output() is not None:
        output_ids.update(id(p) for p in get_output().parameters())

    partition = ParameterPartition(layers=layer_params)
    for p in bare.parameters():  # shared (tied) tensors are yielded once
        if id(p) in in_layers:
            continue
        if id(p) in embedding_ids:
            partition.embeddings.append(p)
            if id(p) in output_ids:  # tied: the same tensor is the LM head
                partition.head.append(p)
        else:
            partition.head.append(p)
    return partition


def layers_path_of(model: nn.Module, layers: nn.ModuleList) -> str | None:
    """The dotted path under which ``layers`` sits in ``model`` (for the history)."""
    for name, module in unwrap_model(model).named_modules():
        if module is layers:
            return name
    return None


@dataclass
class NameLayout:
    """Which of E, decoder layer i or H a parameter *name* of a model belongs to.

    Built from a live (or meta-device) model with the same finder and partition as
    training, so tools that only see tensor names (checkpoints, LoRA adapters) group
    them exactly as LISA switches them.
    """

    groups: dict[str, tuple[str, int | None]]
    layer_prefixes: dict[str, int]
    base_prefix: str = ""

    def group(self, name: str) -> tuple[str, int | None]:
        """``("layer", i)``, ``("embedding", None)`` or ``("head", None)`` for a tensor name.

        Also for names a checkpoint writes without the base model's prefix (GPT-2's ``h.0.``)
        and for PEFT's (``base_model.model.`` in front).
        """
        name = name.removeprefix("base_model.model.")
        for candidate in (name, f"{self.base_prefix}.{name}" if self.base_prefix else name):
            if candidate in self.groups:
                return self.groups[candidate]
            for prefix, index in self.layer_prefixes.items():
                if candidate.startswith(prefix):
                    return LAYER, index
        return HEAD, None  # buffers and extras outside the layers: the final norm's side


def name_layout(model: nn.Module, layers: nn.ModuleList) -> NameLayout:
    """The :class:`NameLayout` of ``model``; tied tensors go to H under the head's name, E otherwise."""
    bare = unwrap_model(model)
    partition = partition_parameters(bare, layers)
    layer_of = {id(p): i for i, group in enumerate(partition.layers) for p in group}
    embedding_ids = {id(p) for p in partition.embeddings}
    get_output = getattr(bare, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    output_names = {n for n, m in bare.named_modules() if output is not None and m is output}
    groups: dict[str, tuple[str, int | None]] = {}
    for name, p in bare.named_parameters(remove_duplicate=False):
        if id(p) in layer_of:
            groups[name] = (LAYER, layer_of[id(p)])
        elif id(p) in embedding_ids and name.rsplit(".", 1)[0] not in output_names:
            groups[name] = (EMBEDDING, None)
        else:
            groups[name] = (HEAD, None)
    modules = {id(m): n for n, m in bare.named_modules()}
    prefixes = {modules[id(layer)] + ".": i for i, layer in enumerate(layers)}
    return NameLayout(groups, prefixes, getattr(bare, "base_model_prefix", "") or "")

