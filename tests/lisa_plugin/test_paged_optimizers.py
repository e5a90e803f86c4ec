"""bitsandbytes' optimizers under LISA, on the real bitsandbytes objects (CPU tensors).

Paged optimizers are refused: on CUDA their buffers are unified memory that bitsandbytes keeps
in its global page manager and cannot free, so `release` would free nothing. On CPU bitsandbytes
falls back to ordinary tensors, so what is tested here is the refusal. The non-paged 8-bit AdamW
steps on CPU, so its release is tested end to end: the freed tensors are really gone.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from lisa_plugin.config import LisaConfig
from lisa_plugin.core import optimizer_state
from lisa_plugin.core.switching import LayerSwitcher

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture(autouse=True)
def fresh_bnb_overrides():
    """bitsandbytes keeps per-parameter overrides in a process-wide singleton keyed by ``id(param)``:
    an override an earlier test left (transformers' Trainer sets 32-bit state for embeddings) would
    apply to whichever new tensor reuses that id. Each test starts without any."""
    bnb.optim.GlobalOptimManager.get_instance().initialize()
    yield
    bnb.optim.GlobalOptimManager.get_instance().initialize()

WIDTH = 64  # 64 x 64 = 4096 elements: bitsandbytes' min_8bit_size, so these weights get 8-bit state


class Toy(nn.Module):
    """E, three decoder layers (found at the known path ``layers``) and H."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(WIDTH, WIDTH)
        self.layers = nn.ModuleList(nn.Linear(WIDTH, WIDTH) for _ in range(3))
        self.head = nn.Linear(WIDTH, WIDTH, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)


def step(model: Toy, optimizer: torch.optim.Optimizer) -> None:
    ids = torch.arange(8).unsqueeze(0)
    model(ids).pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


PAGED = [
    ("PagedAdamW", {}),
    ("PagedAdamW8bit", {}),
    ("PagedAdamW32bit", {}),
    ("AdamW", dict(optim_bits=8, is_paged=True)),  # what transformers builds for `paged_adamw_8bit`
    ("AdamW", dict(optim_bits=32, is_paged=True)),  # ... and for `paged_adamw_32bit`
]


@pytest.mark.parametrize(("cls", "kwargs"), PAGED)
def test_paged_optimizers_are_refused_with_what_to_use_instead(cls, kwargs):
    model = Toy()
    optimizer = getattr(bnb.optim, cls)(model.parameters(), lr=1e-3, **kwargs)
    switcher = LayerSwitcher(model, LisaConfig(n_layers=1, interval_steps=1, seed=0), seed=0)
    with pytest.raises(ValueError, match="is paged") as info:
        switcher.check_optimizer(optimizer)
    message = str(info.value)
    assert f"bitsandbytes.optim.adamw.{cls}" in message
    assert "adamw_bnb_8bit" in message and "never frees" in message


def test_paged_names_are_not_offered_as_supported():
    assert not set(optimizer_state.PAGED_OPTIMIZER_NAMES) & set(optimizer_state.SUPPORTED_OPTIMIZER_NAMES)
    assert not any(c.startswith("Paged") for c in optimizer_state.SUPPORTED_OPTIMIZER_CLASSES)


@pytest.mark.parametrize("kwargs", [dict(optim_bits=8), dict(optim_bits=32)])
def test_non_paged_bnb_adamw_is_accepted(kwargs):
    model = Toy()
    optimizer = bnb.optim.AdamW(model.parameters(), lr=1e-3, **kwargs)  # `adamw_bnb_8bit` / bnb 32-bit
    LayerSwitcher(model, LisaConfig(n_layers=1, interval_steps=1, seed=0), seed=0).check_optimizer(optimizer)


def test_8bit_state_is_counted_once_and_release_really_frees_it():
    model = Toy()
    optimizer = bnb.optim.AdamW(model.parameters(), lr=1e-3, optim_bits=8)
    step(model, optimizer)
    weight = model.layers[0].weight
    entry = optimizer.state[weight]
    assert entry["state1"].dtype == torch.uint8 and "absmax1" in entry  # really the 8-bit layout
    blocks = -(-weight.numel() // 256)
    own = 2 * weight.numel() + 2 * 4 * blocks  # state1, state2 (uint8) + absmax1, absmax2 (float32)
    qmaps = 2 * 256 * 4  # qmap1, qmap2: one pair shared by every 8-bit entry

    per_entry = sum(optimizer_state.tensor_bytes(e) for e in optimizer.state.values())
    total = optimizer_state.state_bytes(optimizer)
    eight_bit = sum(1 for e in optimizer.state.values() if "qmap1" in e)
    assert eight_bit >= 5 and total == per_entry - (eight_bit - 1) * qmaps

    own_refs = [weakref.ref(entry[k]) for k in ("state1", "state2", "absmax1", "absmax2")]
    qmap_ref = weakref.ref(entry["qmap1"])
    del entry
    layer = list(model.layers[0].parameters())
    released = optimizer_state.release_state(optimizer, layer)
    bias = model.layers[0].bias.numel()
    assert released == own + 2 * 4 * bias  # the bias (64 elements) keeps float32 state
    assert optimizer_state.state_bytes(optimizer) == total - released
    gc.collect()
    assert all(r() is None for r in own_refs), "released 8-bit state is still referenced somewhere"
    assert qmap_ref() is not None  # shared, still used by the other entries


def test_layer_switcher_releases_8bit_state_and_training_goes_on():
    model = Toy()
    optimizer = bnb.optim.AdamW(model.parameters(), lr=1e-3, optim_bits=8)
    switcher = LayerSwitcher(model, LisaConfig(n_layers=1, interval_steps=1, seed=0), seed=0)
    switcher.check_optimizer(optimizer)
    held, events = {}, []
    for index in range(4):
        event = switcher.activate(index, optimizer)
        events.append(event)
        assert event.optimizer_state_bytes == optimizer_state.state_bytes(optimizer)
        step(model, optimizer)
        held[index] = {id(p) for p in optimizer.state}
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        assert held[index] == trainable  # the state of every frozen layer was dropped
    switched = [e for e in events[1:] if e.active != e.previous]
    assert switched and all(e.released_bytes > 0 for e in switched)


@pytest.mark.parametrize("name", optimizer_state.PAGED_OPTIMIZER_NAMES)
def test_config_validation_refuses_paged_names(name):
    from lisa_plugin.config import compatibility_problems

    problems = compatibility_problems({"lisa": {}, "optimizer": name})
    assert len(problems) == 1 and f"`optimizer: {name}`" in problems[0] and "adamw_bnb_8bit" in problems[0]
    assert "paged" in problems[0] and "never frees" in problems[0]
