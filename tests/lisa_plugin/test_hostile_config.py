"""Hostile ``lisa:`` blocks and profiles: each is refused with a message naming the key, or warned about.

All failed before issue 18 (accepted silently, or a traceback at train start) except the
strategy-option test at the end, which guards what the layout issue already fixed.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from lisa_plugin.config import config_problems, settings_from_block
from lisa_plugin.strategies.sampling import inclusion_probabilities, sample_weighted, switch_rng

PLUGIN = "lisa_plugin.LISAPlugin"


def problems(**cfg) -> list[str]:
    return config_problems({"plugins": [PLUGIN], **cfg})


@pytest.mark.parametrize("rest, words", [
    ({"adapter": "lora"}, "`adapter: lora` cannot be combined"),
    ({"adapter": "qlora"}, "`adapter: qlora` cannot be combined"),
    ({"lisa_n_layers": 2}, "lisa_n_layers configure Axolotl's built-in LISA"),
    ({"deepspeed": "ds.json"}, "deepspeed"),
    ({"fsdp": ["full_shard"]}, "fsdp"),
    ({"optimizer": "sgd"}, "`optimizer: sgd` is not supported"),
])
def test_an_empty_block_is_a_block(rest, words):
    """`lisa: {}` is LISA with every default (as Axolotl's validated config has it): every refusal applies."""
    found = problems(lisa={}, **rest)
    assert len(found) == 1 and words in found[0], found
    assert settings_from_block({}) is not None and settings_from_block({}).n_layers == 2
    assert any("does not list" in p for p in config_problems({"lisa": {}}))  # and without the plugin it is said


@pytest.mark.parametrize("key", ["n_layers", "interval_steps", "seed"])
def test_booleans_are_not_counts(key):
    found = problems(lisa={key: True})
    assert found == [f"lisa.{key}: True is a boolean; expected an integer (e.g. 2)"], found


def test_negative_seeds_are_refused_before_training():
    assert problems(lisa={"seed": -1}) == ["lisa.seed: Input should be greater than or equal to 0 (got -1)"]
    found = problems(lisa={"n_layers": 2}, seed=-1)
    assert len(found) == 1 and found[0].startswith("seed: -1; LISA seeds its layer sequence"), found
    assert problems(lisa={"seed": 3}, seed=-1) == []  # lisa.seed set: the run's seed is not LISA's


def test_max_steps_within_one_interval_is_warned(caplog):
    with caplog.at_level(logging.WARNING, logger="lisa_plugin"):
        assert problems(lisa={"interval_steps": 20}, max_steps=5) == []
    assert "max_steps: 5 is not more than lisa.interval_steps (20)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lisa_plugin"):
        problems(lisa={"interval_steps": 5}, max_steps=40)
    assert "never switch" not in caplog.text


def test_huge_weights_still_sample_distinct_layers():
    weights = [1e308] * 6
    assert problems(lisa={"strategy": "weighted", "weights": weights}) == []
    assert np.allclose(inclusion_probabilities(weights, 2), 1 / 3)
    for switch in range(50):
        chosen = sample_weighted(weights, 2, switch_rng(0, switch))
        assert len(set(chosen)) == 2 and all(0 <= i < 6 for i in chosen), chosen


@pytest.mark.parametrize("weights", [[True] * 6, ["1", 2, 3], "123456"])
def test_weights_must_be_numbers(weights):
    found = problems(lisa={"strategy": "weighted", "weights": weights})
    assert len(found) == 1 and found[0].startswith("lisa.weights:"), found


def _profile(layers) -> dict:
    return {"format": "lisa_norms/1", "base": "b", "runs": [{"name": "lora", "path": "p", "source": "lora",
                                                              "layers": layers}]}


def _row(layer="0", kind="layer", norm=1.0) -> dict:
    return {"layer": layer, "kind": kind, "update_norm": norm, "relative_norm": 0.1, "mean_update_norm": 0.1,
            "base_norm": 1.0, "num_tensors": 1}


@pytest.mark.parametrize("content", [
    {"format": "lisa_norms/1", "base": "b", "runs": {"lora": []}},  # runs: an object
    {"format": "lisa_norms/1", "base": "b", "runs": ["lora"]},  # a run: a string
    {"format": "lisa_norms/1", "base": "b"},  # no runs
    _profile([["0", "layer", 1.0]]),  # a row: a list
    _profile([_row(layer="first")]),  # int() of a layer name
    _profile([_row(norm="big")]),
    _profile([_row(norm=None)]),
    _profile([_row(norm=True)]),
    _profile([_row(kind="decoder")]),
    _profile([{"layer": "0"}]),  # fields missing
    [1, 2, 3],
])
def test_a_profile_of_the_wrong_shape_is_a_message(tmp_path, content):
    path = tmp_path / "norms.json"
    path.write_text(json.dumps(content))
    found = problems(lisa={"strategy": "profile", "profile": str(path)})
    assert len(found) == 1 and "lisa.profile" in found[0] and str(path) in found[0], found


def test_strategy_options_of_another_strategy_are_refused():
    assert "an option of strategy 'weighted'" in problems(lisa={"weights": [1, 2]})[0]
    assert "an option of strategy 'profile'" in problems(lisa={"profile": "norms.json"})[0]
