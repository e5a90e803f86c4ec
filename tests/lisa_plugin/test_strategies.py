"""weighted, profile, cyclic and adaptive: the distributions they promise, purity, validation."""

import json
import math

import numpy as np
import pytest
from scipy.stats import chisquare

from lisa_plugin import LisaConfig
from lisa_plugin.strategies import (
    adaptive_state,
    inclusion_probabilities,
    record_gradient_norms,
    select_active_layers,
)


def pick(strategy, i, num_layers=8, n_layers=2, seed=7, state=None, **options):
    return select_active_layers(
        strategy=strategy, num_layers=num_layers, n_layers=n_layers, seed=seed, switch_index=i,
        options={"strategy": strategy, **options}, state=state,
    )


def frequencies(strategy, switches, num_layers, n_layers, **options):
    counts = np.zeros(num_layers)
    for i in range(switches):
        counts[pick(strategy, i, num_layers, n_layers, **options)] += 1
    return counts


@pytest.mark.parametrize("n_layers", [1, 3])
def test_weighted_frequencies_match_the_weights(n_layers):
    weights = [1, 2, 3, 4, 0, 6]
    switches = 3000
    counts = frequencies("weighted", switches, 6, n_layers, weights=weights)
    expected = inclusion_probabilities(weights, n_layers) * switches
    assert counts[4] == 0  # zero weight: never sampled
    keep = expected > 0
    assert chisquare(counts[keep], expected[keep]).pvalue > 0.001
    if n_layers == 1:
        assert np.allclose(expected, np.array(weights) / sum(weights) * switches)


def test_inclusion_probabilities_cap_and_sum_to_gamma():
    pi = inclusion_probabilities([100, 1, 1, 1], 2)
    assert pi[0] == 1.0 and np.allclose(pi[1:], 1 / 3) and math.isclose(pi.sum(), 2)
    assert np.allclose(inclusion_probabilities([1, 0, 0, 0], 2), [1, 1 / 3, 1 / 3, 1 / 3])


def test_weighted_is_pure_and_sets_are_valid():
    seq = [pick("weighted", i, weights=[1, 1, 5, 1, 1, 1, 1, 9]) for i in range(40)]
    assert [pick("weighted", i, weights=[1, 1, 5, 1, 1, 1, 1, 9]) for i in range(25, 40)] == seq[25:]
    assert all(len(set(s)) == 2 for s in seq)


def test_weights_validation_names_the_key():
    with pytest.raises(ValueError, match=r"lisa.weights: \[1.0, -1.0\]; expected .*non-negative"):
        LisaConfig(strategy="weighted", weights=[1, -1])
    with pytest.raises(ValueError, match=r"lisa.weights: .*not all zero"):
        LisaConfig(strategy="weighted", weights=[0, 0])
    with pytest.raises(ValueError, match=r"lisa.weights: missing"):
        LisaConfig(strategy="weighted")
    with pytest.raises(ValueError, match=r"lisa.weights: 3 weights given .*expected one per decoder layer, 8"):
        pick("weighted", 0, weights=[1, 2, 3])


def test_weights_count_checked_when_the_switcher_is_built(tiny_root):
    from transformers import AutoModelForCausalLM

    from lisa_plugin.core.switching import LayerSwitcher

    model = AutoModelForCausalLM.from_pretrained(tiny_root / "model")
    with pytest.raises(ValueError, match=r"lisa.weights: 2 weights given .*expected one per decoder layer, 6"):
        LayerSwitcher(model, LisaConfig(strategy="weighted", weights=[1, 2]), seed=0)
    LayerSwitcher(model, LisaConfig(strategy="weighted", weights=[1] * 6), seed=0).activate(0, None)


def write_profile(path, runs):
    from lisa_formats.norms import LayerNorm, NormsProfile, RunNorms

    rows = lambda norms: [LayerNorm(str(i), "layer", n, n, n, 1.0, 1) for i, n in enumerate(norms)]
    profile = NormsProfile(base="b", runs=[RunNorms(name, "p", "weights", rows(n)) for name, n in runs.items()])
    path.write_text(json.dumps(profile.to_json()))
    return path


def test_profile_frequencies_follow_the_profile(tmp_path):
    norms = [0.5, 0.1, 0.1, 0.3, 1.0]
    path = write_profile(tmp_path / "norms.json", {"lora": norms, "full": [1] * 5})
    switches = 3000
    counts = frequencies("profile", switches, 5, 2, profile=str(path), profile_run="lora")
    assert chisquare(counts, inclusion_probabilities(norms, 2) * switches).pvalue > 0.001
    assert counts[4] > counts[0] > counts[1]


def test_profile_errors_name_the_key(tmp_path):
    path = write_profile(tmp_path / "norms.json", {"lora": [1, 2], "full": [1, 1]})
    with pytest.raises(ValueError, match=r"lisa.profile_run: missing; .* holds runs \['lora', 'full'\]"):
        LisaConfig(strategy="profile", profile=str(path))
    with pytest.raises(ValueError, match=r"lisa.profile_run: 'x' is not in"):
        LisaConfig(strategy="profile", profile=str(path), profile_run="x")
    with pytest.raises(ValueError, match=r"lisa.profile: cannot read"):
        LisaConfig(strategy="profile", profile=str(tmp_path / "nope.json"))
    with pytest.raises(ValueError, match=r"lisa.profile: run 'lora' .* has 2 decoder layers; this model has 8"):
        pick("profile", 0, profile=str(path), profile_run="lora")


@pytest.mark.parametrize("num_layers,n_layers", [(12, 3), (10, 3), (7, 2), (5, 5)])
def test_cyclic_covers_every_layer_within_each_block(num_layers, n_layers):
    block = math.ceil(num_layers / n_layers)
    seq = [pick("cyclic", i, num_layers, n_layers) for i in range(block * 6)]
    assert all(len(set(s)) == n_layers for s in seq)
    for start in range(0, len(seq), block):
        assert set().union(*seq[start : start + block]) == set(range(num_layers))
    if num_layers > n_layers:
        assert seq[:block] != seq[block : 2 * block]  # a fresh permutation per block


def test_cyclic_switch_alone_equals_the_sequence():
    seq = [pick("cyclic", i, 10, 3) for i in range(30)]
    assert [pick("cyclic", i, 10, 3) for i in (29, 4, 17, 0)] == [seq[29], seq[4], seq[17], seq[0]]
    assert seq != [pick("cyclic", i, 10, 3, seed=8) for i in range(30)]


def run_adaptive(switches, grad_of_layer, num_layers=6, n_layers=1, state=None, start=0, **options):
    state = {} if state is None else state
    counts = np.zeros(num_layers)
    for i in range(start, start + switches):
        active = pick("adaptive", i, num_layers, n_layers, state=state, **options)
        counts[active] += 1
        for _ in range(3):  # three optimizer steps per interval
            record_gradient_norms(state, {layer: grad_of_layer(layer) for layer in active})
    return counts, state


def test_adaptive_prefers_large_gradients_and_starves_none():
    counts, state = run_adaptive(600, lambda layer: 10.0 if layer == 2 else 1.0, adaptive_epsilon=0.3)
    assert counts[2] > 3 * max(np.delete(counts, 2))
    floor = 600 * 0.3 / 6  # epsilon / L of the mass is uniform
    assert counts.min() > 0.5 * floor
    assert state["ema"][2] == pytest.approx(10.0) and state["ema"][0] == pytest.approx(1.0)


def test_adaptive_without_signal_is_uniform():
    counts, _ = run_adaptive(1200, lambda layer: 1.0, n_layers=2)
    assert chisquare(counts, np.full(6, 1200 * 2 / 6)).pvalue > 0.001


def test_adaptive_state_round_trips_through_json_and_resumes_in_place():
    grad = lambda layer: float(layer + 1)
    _, full_state = run_adaptive(30, grad)
    _, state = run_adaptive(20, grad)
    restored = json.loads(json.dumps(state))
    # A resume asks again for the interval it resumes in: the same set, state unchanged.
    assert pick("adaptive", 19, 6, 1, state=restored) == state["last_active"]
    assert restored == json.loads(json.dumps(state))
    _, resumed = run_adaptive(10, grad, state=restored, start=20)
    assert resumed == full_state


def test_adaptive_state_is_reinitialised_for_another_model():
    state = adaptive_state({}, 4)
    assert state["observe_gradients"] and state["ema"] == [None] * 4
    assert adaptive_state(state, 6)["ema"] == [None] * 6


def test_adaptive_records_gradients_through_the_callback(tiny_root, tmp_path):
    from tests.lisa_plugin.test_callback import make_trainer

    trainer, lisa, _ = make_trainer(
        tiny_root, tmp_path, dict(n_layers=2, interval_steps=3, strategy="adaptive"), probe=False, max_steps=9
    )
    trainer.train()
    history = json.loads((tmp_path / "out" / "lisa_history.json").read_text())
    state = history["strategy_state"]
    assert len(history["switches"]) == 3
    seen = [i for i, e in enumerate(state["ema"]) if e is not None]
    ever_active = {layer for s in history["switches"][:-1] for layer in s["active"]}
    assert set(seen) == ever_active and all(state["ema"][i] > 0 for i in seen)
    # the last interval's 3 steps are tallied, not yet folded in
    assert sorted(i for i, c in enumerate(state["grad_norm_count"]) if c) == history["switches"][-1]["active"]
    assert all(c == 3 for c in state["grad_norm_count"] if c)
