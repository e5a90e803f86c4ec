"""An Axolotl plugin for measurements: records optimizer-state bytes after every optimizer step.

Used by ``tiny_optimizer_state.py`` to measure runs that lisa_plugin does not drive (Axolotl's
built-in LISA, full fine-tuning) the same way as ours. Writes ``optimizer_probe.json`` into the
run's output dir.
"""

from __future__ import annotations

import json
from pathlib import Path

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

from lisa_plugin.core.optimizer_state import state_bytes


class _Recorder(TrainerCallback):
    def __init__(self):
        self.bytes_per_step: list[int] = []

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        self.bytes_per_step.append(state_bytes(optimizer))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        record = {
            "bytes_per_step": self.bytes_per_step,
            "peak_bytes": max(self.bytes_per_step, default=0),
            "final_bytes": self.bytes_per_step[-1] if self.bytes_per_step else 0,
        }
        if state.is_world_process_zero:
            Path(args.output_dir, "optimizer_probe.json").write_text(json.dumps(record))


class ProbePlugin(BasePlugin):
    def add_callbacks_post_trainer(self, cfg, trainer):
        return [_Recorder()]
