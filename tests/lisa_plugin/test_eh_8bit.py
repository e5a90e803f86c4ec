"""`lisa.eh_state: 8bit`: bitsandbytes' 8-bit AdamW state for E and H only, decoder layers in 32 bits,
on the real bitsandbytes objects (CPU tensors; bitsandbytes' non-paged 8-bit AdamW steps on CPU)."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from lisa_plugin.config import LisaConfig, compatibility_problems
from lisa_plugin.core import eh_state, optimizer_state
from lisa_plugin.core.switching import LayerSwitcher

bnb = pytest.importorskip("bitsandbytes")

WIDTH = 64  # 64 x 64 = 4096 elements: bitsandbytes' min_8bit_size, so each weight may get 8-bit state


@pytest.fixture(autouse=True)
def fresh_bnb_overrides():
    """The override registry is process-wide and keyed by ``id(param)``: start and end each test without any."""
    bnb.optim.GlobalOptimManager.get_instance().initialize()
    yield
    bnb.optim.GlobalOptimManager.get_instance().initialize()


class Toy(nn.Module):
    """E, three decoder layers (found at ``layers``) and H; ``tied``: H is E's tensor."""

    def __init__(self, tied: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(WIDTH, WIDTH)
        self.layers = nn.ModuleList(nn.Linear(WIDTH, WIDTH) for _ in range(3))
        self.head = nn.Linear(WIDTH, WIDTH, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.head

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)


def step(model: Toy, optimizer) -> None:
    model(torch.arange(8).unsqueeze(0)).pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def trainer_like_optimizer(model: Toy):
    """What transformers' Trainer builds for `optimizer: adamw_bnb_8bit`, with its override that keeps
    every nn.Embedding in 32 bits (bitsandbytes applies it at the first step)."""
    optimizer = bnb.optim.AdamW(model.parameters(), lr=1e-3, optim_bits=8, is_paged=False)
    bnb.optim.GlobalOptimManager.get_instance().register_module_override(model.embed, "weight", {"optim_bits": 32})
    return optimizer


def switcher(model: Toy) -> LayerSwitcher:
    return LayerSwitcher(model, LisaConfig(n_layers=1, interval_steps=1, seed=0, eh_state="8bit"), seed=0)


def test_without_the_option_the_trainer_keeps_the_embedding_in_32_bits():
    # The control: what `eh_state: 32bit` (today) gives, and why the Trainer's override must go.
    model = Toy()
    optimizer = trainer_like_optimizer(model)
    step(model, optimizer)
    assert optimizer.state[model.embed.weight]["state1"].dtype == torch.float32
    assert optimizer.state[model.head.weight]["state1"].dtype == torch.uint8
    assert optimizer.state[model.layers[0].weight]["state1"].dtype == torch.uint8


@pytest.mark.parametrize("tied", [False, True])
def test_eh_8bit_layers_32bit_and_state_equals_the_bound_at_every_switch(tied):
    model = Toy(tied=tied)
    optimizer = trainer_like_optimizer(model)
    lisa = switcher(model)
    lisa.check_optimizer(optimizer)
    overrides = eh_state.apply("8bit", optimizer, lisa.partition)
    eh = lisa.partition.always_trainable(True, True)
    assert len(overrides.eight_bit) == len(eh) == (1 if tied else 2)  # E and H; a tied tensor once
    assert overrides.dropped_module_overrides == 1
    for index in range(5):
        lisa.activate(index, optimizer)
        step(model, optimizer)
        state = optimizer.state
        assert state[model.embed.weight]["state1"].dtype == torch.uint8
        assert state[model.head.weight]["state1"].dtype == torch.uint8
        active = [model.layers[i].weight for i in lisa.active]
        assert all(state[w]["state1"].dtype == torch.float32 for w in active)
        trainable = [p for p in model.parameters() if p.requires_grad]
        bound = eh_state.bnb_state_bound(trainable, eight_bit=eh)
        assert optimizer_state.state_bytes(optimizer) == bound  # exact, so within 1.02x at every switch


def test_the_bound_counts_8bit_blocks_qmaps_and_small_tensors():
    model = Toy()
    eh = [model.embed.weight, model.head.weight]
    layer = list(model.layers[0].parameters())  # weight (4096) and bias (64, below min_8bit_size)
    n = WIDTH * WIDTH
    expected = 2 * (2 * n + 2 * 4 * (n // 256)) + 2 * 256 * 4 + 8 * n + 8 * WIDTH
    assert eh_state.bnb_state_bound(eh + layer + eh, eight_bit=eh) == expected
    assert eh_state.bnb_state_bytes([100], [n]) == 8 * 100 + 8 * n  # small 8-bit tensors stay float32, no qmaps


@pytest.mark.parametrize(
    "make",
    [
        lambda params: torch.optim.AdamW(params, lr=1e-3),
        lambda params: bnb.optim.AdamW(params, lr=1e-3, optim_bits=32),
        lambda params: bnb.optim.AdamW(params, lr=1e-3, optim_bits=8, is_paged=True),
    ],
    ids=["torch", "bnb-32bit", "bnb-paged"],
)
def test_other_optimizers_are_refused_naming_the_key(make):
    model = Toy()
    optimizer = make(model.parameters())
    with pytest.raises(ValueError, match=r"lisa\.eh_state: 8bit needs .*adamw_bnb_8bit") as info:
        eh_state.apply("8bit", optimizer, switcher(model).partition)
    assert type(optimizer).__name__ in str(info.value)
    assert eh_state.apply("32bit", optimizer, switcher(model).partition) is None  # the default does nothing


def test_overrides_are_removed_explicitly_and_when_the_parameter_dies():
    registry = bnb.optim.GlobalOptimManager.get_instance().pid2config
    model = Toy()
    overrides = eh_state.apply("8bit", trainer_like_optimizer(model), switcher(model).partition)
    assert registry[id(model.embed.weight)] == {"optim_bits": 8}
    assert registry[id(model.layers[2].bias)] == {"optim_bits": 32}
    overrides.remove()
    assert not registry

    model = Toy()
    eh_state.apply("8bit", trainer_like_optimizer(model), switcher(model).partition)
    assert len(registry) == 8  # E, H, 3 x (weight, bias)
    del model
    gc.collect()
    assert not registry


def test_config_key_and_its_check():
    assert LisaConfig().eh_state == "32bit"
    with pytest.raises(ValueError, match="eh_state"):
        LisaConfig(eh_state="4bit")
    for name in ("adamw_torch", None, "paged_adamw_8bit"):
        problems = [p for p in compatibility_problems({"lisa": {"eh_state": "8bit"}, "optimizer": name})
                    if "eh_state" in p]
        assert len(problems) == 1 and "`optimizer: adamw_bnb_8bit`" in problems[0] and f"`optimizer: {name}`" in problems[0]
    assert compatibility_problems({"lisa": {"eh_state": "8bit"}, "optimizer": "adamw_bnb_8bit"}) == []
    assert compatibility_problems({"lisa": {}, "optimizer": "adamw_torch"}) == []
