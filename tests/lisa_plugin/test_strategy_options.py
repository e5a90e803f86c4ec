"""Strategy options: flat `lisa:` keys validated by the strategy that owns them, built-in or third-party."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lisa_plugin import LisaConfig
from lisa_plugin.manager import get_plugin_manager
from lisa_plugin.strategies import select_active_layers

HERE = Path(__file__).parent


def test_a_typo_names_the_key_and_the_nearest_valid_one():
    with pytest.raises(ValueError, match=r"lisa.interval_step: unknown key. Did you mean 'interval_steps'\?"):
        LisaConfig(interval_step=5)
    with pytest.raises(ValueError, match=r"lisa.adaptive_decy: unknown key. Did you mean 'adaptive_decay'\?"):
        LisaConfig(strategy="adaptive", adaptive_decy=0.5)


def test_an_option_of_another_strategy_names_its_owner():
    with pytest.raises(ValueError, match=r"lisa.weights: an option of strategy 'weighted', not of 'uniform'"):
        LisaConfig(weights=[1, 2])
    with pytest.raises(ValueError, match=r"lisa.adaptive_epsilon: an option of strategy 'adaptive', not of 'cyclic'"):
        LisaConfig(strategy="cyclic", adaptive_epsilon=0.2)


def test_flat_keys_keep_working_and_defaults_are_filled():
    assert LisaConfig(strategy="adaptive", adaptive_decay=0.5).model_dump()["adaptive_epsilon"] == 0.1
    assert LisaConfig(strategy="weighted", weights=[1, 2]).model_dump()["weights"] == [1.0, 2.0]
    # a block copied with every old key at null still validates: null means unset
    old = dict(strategy="cyclic", weights=None, profile=None, profile_run=None)
    assert LisaConfig(**old).model_dump() == LisaConfig(strategy="cyclic").model_dump()
    with pytest.raises(ValueError, match=r"lisa.adaptive_decay: 1.5 for strategy 'adaptive': .*less than 1"):
        LisaConfig(strategy="adaptive", adaptive_decay=1.5)


@pytest.fixture
def countdown_plugin(monkeypatch):
    """The test strategy registered the way a user would: LISA_PLUGINS, in the process-wide manager."""
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("LISA_PLUGINS", "third_party_strategy")
    get_plugin_manager.cache_clear()
    yield
    get_plugin_manager.cache_clear()
    sys.modules.pop("third_party_strategy", None)


def test_a_third_party_option_is_validated_and_passed_through(countdown_plugin):
    config = LisaConfig(strategy="countdown", countdown_stride=2)
    assert config.model_dump()["countdown_stride"] == 2
    picked = [
        select_active_layers(strategy="countdown", num_layers=6, n_layers=1, seed=0, switch_index=i,
                             options=config.model_dump(), resolved={})
        for i in range(3)
    ]
    assert picked == [[5], [3], [1]]
    assert LisaConfig(strategy="countdown").model_dump()["countdown_stride"] == 1


def test_a_third_party_option_gets_a_clear_error(countdown_plugin):
    with pytest.raises(ValueError, match=r"lisa.countdown_stride: 0 for strategy 'countdown': .*greater than or equal to 1"):
        LisaConfig(strategy="countdown", countdown_stride=0)
    with pytest.raises(ValueError, match=r"lisa.countdown_stride: an option of strategy 'countdown', not of 'uniform'"):
        LisaConfig(countdown_stride=2)
    with pytest.raises(ValueError, match=r"lisa.countdown_strid: unknown key. Did you mean 'countdown_stride'\?"):
        LisaConfig(strategy="countdown", countdown_strid=2)


def tiny_llama(num_layers=4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=num_layers, num_attention_heads=2))


def test_a_profile_is_read_once_at_start_and_recorded(tmp_path):
    from lisa_formats.norms import LayerNorm, NormsProfile, RunNorms
    from lisa_plugin.core.switching import LayerSwitcher

    norms = [0.1, 0.2, 0.3, 0.4]
    rows = [LayerNorm(str(i), "layer", n, n, n, 1.0, 1) for i, n in enumerate(norms)]
    path = tmp_path / "norms.json"
    path.write_text(json.dumps(NormsProfile(base="b", runs=[RunNorms("lora", "p", "lora", rows)]).to_json()))
    switcher = LayerSwitcher(tiny_llama(), LisaConfig(strategy="profile", profile=str(path)), seed=3)
    path.unlink()  # switches must not need the file any more
    for i in range(5):
        switcher.activate(i, None)
    resolved = switcher.history.to_json()["strategy_resolved"]
    assert resolved == {"weights": norms, "profile": str(path), "profile_run": None}


def test_weights_are_resolved_against_the_model_and_recorded():
    from lisa_plugin.core.switching import LayerSwitcher

    switcher = LayerSwitcher(tiny_llama(), LisaConfig(strategy="weighted", weights=[1, 0, 0, 3]), seed=0)
    assert switcher.history.strategy_resolved == {"weights": [1.0, 0.0, 0.0, 3.0]}
    assert switcher.activate(0, None).active == [0, 3]


def test_core_and_strategies_import_neither_transformers_nor_axolotl():
    code = """
import importlib, json, pkgutil, sys
import lisa_plugin.core, lisa_plugin.strategies
for package in (lisa_plugin.core, lisa_plugin.strategies):
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
import lisa_plugin.config, lisa_plugin.manager
lisa_plugin.config.LisaConfig(strategy="adaptive")  # builds the plugin manager: every built-in plugin
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("transformers", "axolotl"))))
"""
    env = {"LISA_PLUGIN_DISABLE_AUTOLOAD": "1", "PATH": ""}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=HERE.parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
