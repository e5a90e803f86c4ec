"""The built-in observer of switches: one log line per switch."""

from __future__ import annotations

import logging

from lisa_plugin import hookimpl
from lisa_plugin.core.history import SwitchEvent

LOG = logging.getLogger("lisa_plugin")


@hookimpl
def lisa_on_switch(event: SwitchEvent) -> None:
    LOG.info(
        "LISA switch %d at step %d: active layers %s of %d, %s trainable parameters, "
        "optimizer state %.1f MB -> %.1f MB",
        event.switch_index,
        event.step,
        event.active,
        event.num_layers,
        f"{event.trainable_params:,}",
        event.optimizer_state_bytes_before / 2**20,
        event.optimizer_state_bytes / 2**20,
    )
