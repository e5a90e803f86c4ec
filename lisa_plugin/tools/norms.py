"""The paper's observation, measured on your own runs: how far training moved each layer.

Pan et al. (2024, Fig. 2) found that LoRA puts most of its update into the embedding
and head, and little into the decoder layers between them; that skew is what LISA's
"E and H always, gamma layers at a time" design rests on. :func:`measure_norms` computes,
for every layer group (embedding, each decoder layer, head = final norm + LM head):

* ``update_norm``: the Frobenius norm of ``W_run - W_base`` over all tensors of the group;
* ``relative_norm``: ``update_norm / ||W_base||`` over the same tensors;
* ``mean_update_norm``: the mean per-tensor update norm, the y axis of the paper's figure.

A full or LISA run is read as weights; a LoRA run (a PEFT adapter dir) as its update
``scale * B @ A`` straight from the adapter, never merging the model. Checkpoints are
streamed one tensor at a time with ``safetensors.safe_open`` (sharded ones through
``model.safetensors.index.json``), so comparing 7B models needs about one tensor pair
of memory. The profile is written as JSON (``lisa_norms/1``), a Markdown table and a PNG,
and can drive the ``profile`` sampling strategy (which reads it through :mod:`lisa_formats.norms`).

Tensors are grouped by the layer finder and E/layers/H partition LISA trains with
(:mod:`lisa_plugin.core.layers`), applied to a meta-device model built from the base's
``config.json``, so the groups can never disagree with what LISA switches (e.g. GPT-NeoX's
untied ``embed_out`` head is H, not E).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from lisa_formats.atomic import write_json_atomic, write_text_atomic
from lisa_formats.norms import (
    EMBEDDING,
    HEAD,
    LAYER,
    PROFILE_FILE,
    LayerNorm,
    NormsProfile,
    RunNorms,
)

if TYPE_CHECKING:
    from lisa_plugin.core.layers import NameLayout

TABLE_FILE = "norms.md"
PLOT_FILE = "norms.png"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<emb>embedding_)?(?P<ab>[AB])(?:\.weight)?$")


# -- which tensor is E, layer i or H: the training's own layer finder, on a meta model ------


def model_layout(model_dir: str | Path, layers_path: str | None = None) -> "NameLayout":
    """Group tensor names exactly as LISA trains: the model of ``model_dir/config.json`` is built
    on the meta device (no memory, no weights read) and split by ``core.layers``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lisa_plugin.core.layers import find_decoder_layers, name_layout
    from lisa_plugin.manager import get_plugin_manager

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return name_layout(model, find_decoder_layers(model, layers_path, get_plugin_manager()))


# -- reading checkpoints tensor by tensor -------------------------------------------


def checkpoint_files(model_dir: str | Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it, for a single-file or sharded checkpoint."""
    model_dir = Path(model_dir)
    index = model_dir / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: no 'weight_map'; expected a safetensors shard index")
        return {name: model_dir / shard for name, shard in weight_map.items()}
    single = model_dir / SINGLE_FILE
    if single.is_file():
        from safetensors import safe_open

        with safe_open(single, framework="pt") as fh:
            return {name: single for name in fh.keys()}
    raise FileNotFoundError(
        f"{model_dir}: neither {SINGLE_FILE} nor {INDEX_FILE}; expected a model saved as safetensors"
    )


class _Reader:
    """Reads tensors by name from a checkpoint's shards, opening each shard once (memory-mapped)."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self._stack = contextlib.ExitStack()
        self._open: dict[Path, object] = {}

    def __enter__(self) -> "_Reader":
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def get(self, name: str):
        from safetensors import safe_open

        path = self.files[name]
        if path not in self._open:
            self._open[path] = self._stack.enter_context(safe_open(path, framework="pt"))
        return self._open[path].get_tensor(name)


class _Groups:
    """Running sums of squares per layer group, in float64."""

    def __init__(self, layout: "NameLayout") -> None:
        self.layout = layout
        self.update_sq: dict[tuple[str, int | None], float] = {}
        self.tensor_norms: dict[tuple[str, int | None], list[float]] = {}

    def add(self, name: str, update_sq: float) -> None:
        key = self.layout.group(name)
        self.update_sq[key] = self.update_sq.get(key, 0.0) + update_sq
        self.tensor_norms.setdefault(key, []).append(math.sqrt(update_sq))


def _ordered_keys(keys) -> list[tuple[str, int | None]]:
    rank = {EMBEDDING: 0, LAYER: 1, HEAD: 2}
    return sorted(keys, key=lambda k: (rank[k[0]], k[1] if k[1] is not None else -1))


def base_norms(base_files: dict[str, Path], layout: "NameLayout") -> _Groups:
    import torch

    groups = _Groups(layout)
    with _Reader(base_files) as base:
        for name in base_files:
            groups.add(name, float(torch.linalg.vector_norm(base.get(name).double()) ** 2))
    return groups


def weights_update(base_files: dict[str, Path], run_dir: Path, layout: "NameLayout") -> _Groups:
    """Per-group ``||W_run - W_base||^2`` of a run saved as full weights (full FT or LISA)."""
    import torch

    run_files = checkpoint_files(run_dir)
    missing = [n for n in base_files if n not in run_files]
    if missing:
        raise ValueError(
            f"{run_dir}: lacks {len(missing)} tensors of the base model (e.g. {missing[:3]}); "
            "expected a run trained from this base"
        )
    groups = _Groups(layout)
    with _Reader(base_files) as base, _Reader(run_files) as run:
        for name in base_files:  # one tensor pair in memory at a time
            before, after = base.get(name), run.get(name)
            if tuple(after.shape) != tuple(before.shape):
                raise ValueError(
                    f"{run_dir}: tensor {name} has shape {tuple(after.shape)}; the base's is {tuple(before.shape)}"
                )
            groups.add(name, float(torch.linalg.vector_norm(after.double() - before.double()) ** 2))
    return groups


def _lora_scale(config: dict, module: str, rank: int) -> float:
    alpha = config.get("lora_alpha", 8)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.fullmatch(rf"(?:.*\.)?{pattern}", module):
            alpha = value
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def lora_update(adapter_dir: Path, layout: "NameLayout") -> _Groups:
    """Per-group ``||scale * B @ A||^2`` of a PEFT LoRA adapter, without forming B @ A.

    ``||B A||_F^2 = sum((B^T B) * (A A^T))``: two r x r products per module, so even a
    7B adapter is measured in seconds and little memory. The norm does not change under
    transposition, so ``fan_in_fan_out`` and embedding adapters need no special case.
    """
    from safetensors import safe_open

    config_path = adapter_dir / ADAPTER_CONFIG
    config = json.loads(config_path.read_text())
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise ValueError(f"{config_path}: peft_type {config.get('peft_type')!r}; expected LORA")
    if config.get("use_dora"):
        raise ValueError(f"{config_path}: use_dora is true; DoRA rescales weights, expected a plain LoRA adapter")
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{adapter_dir}: no {ADAPTER_WEIGHTS}; expected a PEFT adapter saved as safetensors")
    pairs: dict[str, dict[str, str]] = {}
    ignored = []
    with safe_open(weights, framework="pt") as fh:
        for key in fh.keys():
            match = _LORA_KEY.match(key)
            if match:
                pairs.setdefault(match["module"], {})[match["ab"]] = key
            else:
                ignored.append(key)
        if ignored:
            warnings.warn(
                f"{weights}: {len(ignored)} tensors are not LoRA factors (e.g. {ignored[0]}; modules_to_save?) "
                "and are not counted in the update norms"
            )
        groups = _Groups(layout)
        for module, keys in pairs.items():
            if set(keys) != {"A", "B"}:
                raise ValueError(f"{weights}: module {module} has only lora_{''.join(keys)}; expected both A and B")
            a = fh.get_tensor(keys["A"]).double()
            b = fh.get_tensor(keys["B"]).double()
            if a.shape[0] != b.shape[1]:  # embedding factors are stored transposed
                a, b = a.T, b.T
            rank = a.shape[0]
            scale = _lora_scale(config, module, rank)
            squared = float(((b.T @ b) * (a @ a.T)).sum()) * scale**2
            groups.add(module + ".weight", max(squared, 0.0))
    return groups


# -- the profile -------------------------------------------------------------------


def is_adapter(run_dir: Path) -> bool:
    return (Path(run_dir) / ADAPTER_CONFIG).is_file()


def measure_norms(
    base: str | Path, runs: list[str | Path], names: list[str] | None = None, layers_path: str | None = None
) -> NormsProfile:
    """The per-layer update norms of every run against ``base`` (``layers_path`` as in ``lisa:``)."""
    base = Path(base)
    base_files = checkpoint_files(base)
    layout = model_layout(base, layers_path)
    base_groups = base_norms(base_files, layout)
    keys = _ordered_keys(base_groups.update_sq)
    names = names or _run_names([Path(r) for r in runs])
    result = []
    for name, run in zip(names, map(Path, runs)):
        if not run.is_dir():
            raise FileNotFoundError(f"{run}: not a directory; expected an Axolotl output dir or a PEFT adapter dir")
        source = "lora" if is_adapter(run) else "weights"
        groups = lora_update(run, layout) if source == "lora" else weights_update(base_files, run, layout)
        unknown = set(groups.update_sq) - set(keys)
        if unknown:
            raise ValueError(f"{run}: updates layer groups {sorted(map(str, unknown))} the base {base} does not have")
        rows = [_row(key, groups, base_groups) for key in keys]
        result.append(RunNorms(name=name, path=str(run), source=source, layers=rows))
    return NormsProfile(base=str(base), runs=result)


def _row(key: tuple[str, int | None], groups: _Groups, base_groups: _Groups) -> LayerNorm:
    update = math.sqrt(groups.update_sq.get(key, 0.0))
    base_norm = math.sqrt(base_groups.update_sq[key])
    per_tensor = groups.tensor_norms.get(key, [])
    count = len(base_groups.tensor_norms[key])  # the mean is over the base's tensors: untouched ones count as zero
    return LayerNorm(
        layer=str(key[1]) if key[0] == LAYER else key[0],
        kind=key[0],
        update_norm=update,
        relative_norm=update / base_norm if base_norm > 0 else 0.0,
        mean_update_norm=sum(per_tensor) / count,
        base_norm=base_norm,
        num_tensors=count,
    )


def _run_names(runs: list[Path]) -> list[str]:
    names: list[str] = []
    for run in runs:
        name = run.resolve().name
        while name in names:
            name = f"{run.resolve().parent.name}/{name}"
        names.append(name)
    return names


def markdown_table(profile: NormsProfile) -> str:
    runs = profile.runs
    head = "| layer | " + " | ".join(f"{r.name} update | {r.name} relative" for r in runs) + " |"
    rule = "|---|" + "---:|---:|" * len(runs)
    lines = [f"Update norms against `{profile.base}` (Frobenius over each layer group).", "", head, rule]
    for i, row in enumerate(runs[0].layers if runs else []):
        cells = " | ".join(f"{r.layers[i].update_norm:.4g} | {r.layers[i].relative_norm:.3g}" for r in runs)
        lines.append(f"| {row.layer} | {cells} |")
    return "\n".join(lines) + "\n"


def plot(profile: NormsProfile, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for run in profile.runs:
        labels = [("E" if r.kind == EMBEDDING else "H" if r.kind == HEAD else r.layer) for r in run.layers]
        ax.plot(range(len(labels)), [r.mean_update_norm for r in run.layers], marker="o", label=f"{run.name} ({run.source})")
        ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("layer (E: embedding, H: final norm + head)")
    ax.set_ylabel("mean update norm ||W - W_base||")
    ax.set_title("Layerwise update norms")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_profile(profile: NormsProfile, output: str | Path) -> dict[str, Path]:
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = {"json": output / PROFILE_FILE, "markdown": output / TABLE_FILE, "plot": output / PLOT_FILE}
    write_json_atomic(paths["json"], profile.to_json())
    write_text_atomic(paths["markdown"], markdown_table(profile))
    plot(profile, paths["plot"])
    return paths
