"""``lisa_history.json`` (``lisa_history/1``): what a LISA run records, one event per switch.

``lisa_history.json`` (in the run's output dir) is read by the evaluation harness
and by people. Its shape::

    {
      "format": "lisa_history/1",
      "settings": {...the lisa: block, seed resolved...},
      "num_layers": 24,
      "layers_path": "model.layers",
      "layer_params": [..params per decoder layer..],
      "always_trainable_params": 123,          # E and/or H, tied tensors once
      "switches": [
        {"step": 0, "active": [3, 17], "trainable_params": ...,
         "optimizer_state_bytes_before": ..., "optimizer_state_bytes": ...},
        ...
      ],
      "activation_counts": [..intervals each layer was active..]
    }

``step`` is the optimizer step from which the set is trainable (0, K, 2K, ...).
``optimizer_state_bytes_before`` is measured just before the switch (the state
built up over the interval that ends there; the peak of the interval) and
``optimizer_state_bytes`` just after it (after ``release``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lisa_formats.atomic import write_json_atomic
from lisa_formats.userfiles import read_user_text

HISTORY_FILE = "lisa_history.json"
FORMAT = "lisa_history/1"


@dataclass
class SwitchEvent:
    """One change of the active set, as observers (``lisa_on_switch``) see it."""

    step: int
    switch_index: int
    previous: list[int] | None
    active: list[int]
    num_layers: int
    trainable_params: int
    optimizer_state_bytes_before: int
    optimizer_state_bytes: int
    released_bytes: int

    def record(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "active": list(self.active),
            "trainable_params": self.trainable_params,
            "optimizer_state_bytes_before": self.optimizer_state_bytes_before,
            "optimizer_state_bytes": self.optimizer_state_bytes,
        }

    def metrics(self) -> dict[str, float]:
        """Scalars for the trainer's log (and so W&B / TensorBoard / trackio)."""
        out = {
            "lisa/switch": float(self.switch_index),
            "lisa/trainable_params": float(self.trainable_params),
            "lisa/optimizer_state_bytes": float(self.optimizer_state_bytes_before),
            "lisa/optimizer_state_bytes_after_release": float(self.optimizer_state_bytes),
        }
        for rank, layer in enumerate(self.active):
            out[f"lisa/active_layer_{rank}"] = float(layer)
        return out


@dataclass
class LisaHistory:
    settings: dict[str, Any]
    num_layers: int
    layers_path: str | None
    layer_params: list[int]
    always_trainable_params: int
    switches: list[dict[str, Any]] = field(default_factory=list)
    strategy_state: dict[str, Any] = field(default_factory=dict)
    # What the strategy resolved once, at start, from its options (e.g. the per-layer
    # weights read from a profile), so a run can be understood without its inputs.
    strategy_resolved: dict[str, Any] = field(default_factory=dict)

    @property
    def activation_counts(self) -> list[int]:
        counts = [0] * self.num_layers
        for switch in self.switches:
            for layer in switch["active"]:
                counts[layer] += 1
        return counts

    def add(self, event: SwitchEvent) -> None:
        # A resumed run re-applies the set of the interval it resumes in: the record
        # written when that interval began stays; anything after it is dropped.
        same = [s for s in self.switches if s["step"] == event.step and s["active"] == event.active]
        self.switches = [s for s in self.switches if s["step"] < event.step]
        self.switches.append(same[0] if same else event.record())

    def to_json(self) -> dict[str, Any]:
        data = {"format": FORMAT, **asdict(self)}
        data["activation_counts"] = self.activation_counts
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "LisaHistory":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} record (format={data.get('format')!r})")
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})

    def write(self, output_dir: str | os.PathLike) -> Path:
        path = Path(output_dir) / HISTORY_FILE
        write_json_atomic(path, self.to_json())
        return path


def read_history(path: str | os.PathLike) -> LisaHistory:
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY_FILE
    return LisaHistory.from_json(json.loads(read_user_text(path)))
