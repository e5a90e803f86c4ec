"""``norms.json`` (``lisa_norms/1``): how far each layer group moved in a run.

Written by ``lisa-plugin norms`` (``lisa_plugin.tools.norms``), read by the ``profile``
sampling strategy and by the evaluation report. One row per layer group: the embedding
(``E``), each decoder layer, and the head (``H`` = final norm + LM head)::

    {"format": "lisa_norms/1", "base": "...",
     "runs": [{"name": "lora", "path": "...", "source": "weights" | "lora",
               "layers": [{"layer": "embedding" | "0" | ... | "head",
                           "kind": "embedding" | "layer" | "head",
                           "update_norm": ..., "relative_norm": ..., "mean_update_norm": ...,
                           "base_norm": ..., "num_tensors": ...}, ...]}]}
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lisa_formats.userfiles import read_user_text

FORMAT = "lisa_norms/1"
PROFILE_FILE = "norms.json"

EMBEDDING, LAYER, HEAD = "embedding", "layer", "head"


@dataclass
class LayerNorm:
    """One row of the profile: a layer group's update, absolute and relative to the base."""

    layer: str  # "embedding", "0", "1", ..., "head"
    kind: str  # embedding | layer | head
    update_norm: float
    relative_norm: float
    mean_update_norm: float
    base_norm: float
    num_tensors: int


@dataclass
class RunNorms:
    name: str
    path: str
    source: str  # "weights" (full, LISA) or "lora" (PEFT adapter)
    layers: list[LayerNorm] = field(default_factory=list)

    def decoder_norms(self) -> list[float]:
        """Update norms of the decoder layers, in layer order."""
        rows = sorted((r for r in self.layers if r.kind == LAYER), key=lambda r: int(r.layer))
        return [row.update_norm for row in rows]


@dataclass
class NormsProfile:
    base: str
    runs: list[RunNorms]
    format: str = FORMAT

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object, source: str = "profile") -> "NormsProfile":
        expected = f"expected a {FORMAT} file from `lisa-plugin norms`"
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{source}: format {found!r}; {expected}")
        try:
            if not isinstance(data["runs"], list):
                raise TypeError(f"'runs' is a {type(data['runs']).__name__}, not a list")
            runs = [
                RunNorms(**{**run, "layers": [_layer_row(row) for row in run["layers"]]})
                for run in data["runs"]
            ]
            return cls(base=str(data["base"]), runs=runs, format=data["format"])
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"{source}: malformed {FORMAT} record ({type(exc).__name__}: {exc}); {expected}") from None


def _layer_row(row: object) -> LayerNorm:
    """One ``layers`` row, checked: a decoder row's ``layer`` is its index, every norm a finite number."""
    if not isinstance(row, dict):
        raise TypeError(f"a 'layers' row is a {type(row).__name__}, not an object")
    norm = LayerNorm(**row)
    if norm.kind not in (EMBEDDING, LAYER, HEAD):
        raise ValueError(f"row {row!r}: 'kind' must be {EMBEDDING!r}, {LAYER!r} or {HEAD!r}")
    if norm.kind == LAYER and not (isinstance(norm.layer, (str, int)) and str(norm.layer).isdigit()):
        raise ValueError(f"row {row!r}: a decoder layer's 'layer' must be its index, e.g. \"0\"")
    value = norm.update_norm
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"row {row!r}: 'update_norm' must be a finite number >= 0")
    return norm


def profile_path(path: str | Path) -> Path:
    """``path`` itself, or ``path/norms.json`` for a folder."""
    path = Path(path)
    return path / PROFILE_FILE if path.is_dir() else path


def read_profile(path: str | Path, key: str = "lisa.profile") -> NormsProfile:
    """A profile file (or a folder holding ``norms.json``); errors name ``key`` and the file."""
    path = profile_path(path)
    try:
        data = json.loads(read_user_text(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{key}: cannot read {str(path)!r} ({exc}); expected a `lisa-plugin norms` JSON") from None
    return NormsProfile.from_json(data, source=f"{key}: {path}")


def read_profile_run(path: str | Path, run: str | None) -> RunNorms:
    """The run ``run`` of a profile file (any run when it holds one), for the ``profile`` strategy."""
    profile = read_profile(path)
    names = [r.name for r in profile.runs]
    if run is None:
        if len(profile.runs) != 1:
            raise ValueError(
                f"lisa.profile_run: missing; {profile_path(path)} holds runs {names}, expected one of them named"
            )
        return profile.runs[0]
    for candidate in profile.runs:
        if candidate.name == run:
            return candidate
    raise ValueError(f"lisa.profile_run: {run!r} is not in {profile_path(path)}; expected one of {names}")


def profile_weights(path: str | Path | None, run: str | None, num_layers: int) -> list[float]:
    """Per-decoder-layer weights (update norms, in layer order) from a profile."""
    if path is None:
        raise ValueError("lisa.profile: missing; strategy 'profile' needs the path of a `lisa-plugin norms` JSON")
    chosen = read_profile_run(path, run)
    weights = chosen.decoder_norms()
    if len(weights) != num_layers:
        raise ValueError(
            f"lisa.profile: run {chosen.name!r} of {path} has {len(weights)} decoder layers; this model has {num_layers}"
        )
    return weights
