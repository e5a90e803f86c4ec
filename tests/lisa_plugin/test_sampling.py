import random

import numpy as np
import pytest
import torch

from lisa_plugin.manager import strategy_names
from lisa_plugin.strategies import UnknownStrategyError, select_active_layers


def sequence(seed, n=30, num_layers=12, n_layers=3, start=0):
    return [
        select_active_layers(strategy="uniform", num_layers=num_layers, n_layers=n_layers, seed=seed, switch_index=i)
        for i in range(start, n)
    ]


def test_same_seed_same_sequence_and_independent_of_global_rngs():
    first = sequence(seed=5)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    _ = [random.random(), np.random.rand(), torch.rand(1)]
    second = sequence(seed=5)
    assert first == second
    assert sequence(seed=6) != first


def test_sets_are_valid_and_vary():
    seq = sequence(seed=0, n=50)
    for active in seq:
        assert len(active) == 3 and len(set(active)) == 3
        assert all(0 <= i < 12 for i in active) and active == sorted(active)
    assert len({tuple(a) for a in seq}) > 20


def test_pure_function_of_switch_index():
    # A resumed run asks for switch 17 without having asked for 0..16.
    assert sequence(seed=3, n=30, start=17) == sequence(seed=3, n=30)[17:]


def test_uniform_frequencies_match_expectation():
    from scipy.stats import chisquare

    counts = np.zeros(10)
    switches = 4000
    for i in range(switches):
        counts[select_active_layers(strategy="uniform", num_layers=10, n_layers=2, seed=11, switch_index=i)] += 1
    expected = np.full(10, switches * 2 / 10)
    assert chisquare(counts, expected).pvalue > 0.001


def test_unknown_strategy_lists_registered_ones():
    assert "uniform" in strategy_names()
    with pytest.raises(UnknownStrategyError, match=r"lisa.strategy: unknown strategy 'nope'.*Available: .*uniform"):
        select_active_layers(strategy="nope", num_layers=4, n_layers=1, seed=0, switch_index=0)
