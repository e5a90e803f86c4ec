"""The `lisa:` block through Axolotl's own config loading and validation (in process)."""

import json

import pytest
import yaml
from axolotl.cli.config import load_cfg

from tests.conftest import axolotl_config


def load(tiny_root, tmp_path, **overrides):
    cfg = axolotl_config("lisa", tiny_root, tmp_path / "out", **overrides)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(cfg))
    return load_cfg(str(path))


def test_valid_block_gets_the_defaults(tiny_root, tmp_path):
    from lisa_plugin import LisaConfig

    cfg = load(tiny_root, tmp_path, lisa={"n_layers": 3})
    # Axolotl drops null values from the validated config; the plugin restores them.
    from lisa_plugin.integrations.axolotl import _lisa_config

    assert _lisa_config(cfg) == LisaConfig(n_layers=3, interval_steps=5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(lisa={"n_layers": 0}), r"n_layers[\s\S]*greater than or equal to 1"),
        (dict(lisa={"interval_steps": 0}), r"interval_steps[\s\S]*greater than or equal to 1"),
        (dict(lisa={"strategy": "importance"}), r"lisa.strategy: unknown strategy 'importance'. Available: .*uniform"),
        (dict(lisa={"layers_path": "model.layers[0]"}), r"lisa.layers_path: 'model.layers\[0\]' is not a dotted"),
        (dict(lisa={"n_layer": 2}), r"lisa.n_layer: unknown key. Did you mean 'n_layers'\?"),
        (dict(adapter="lora", lora_r=8, lora_alpha=16, lora_target_linear=True),
         r"`adapter: lora` cannot be combined with `lisa:`"),
        (dict(lisa_n_layers=2, lisa_step_interval=10), r"lisa_n_layers, lisa_step_interval configure Axolotl's built-in"),
        (dict(optimizer="adafactor"), r"`optimizer: adafactor` is not supported with `lisa:`.*adamw_torch_fused"),
        (dict(fsdp_config={"fsdp_version": 2, "reshard_after_forward": True}),
         r"`fsdp_config.auto_wrap_policy: None` with `lisa:`: LISA under FSDP2 needs one `fully_shard` unit per decoder layer"),
        (dict(fsdp_config={"fsdp_version": 1, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}), r"fsdp_version: 2"),
    ],
)
def test_config_errors_name_the_key(tiny_root, tmp_path, overrides, message):
    with pytest.raises(Exception, match=message):
        load(tiny_root, tmp_path, **overrides)


def test_deepspeed_is_refused(tiny_root, tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto"}))
    with pytest.raises(Exception, match=r"`deepspeed` cannot be combined with `lisa:`"):
        load(tiny_root, tmp_path, deepspeed=str(ds))


def test_listed_plugin_without_its_block_is_an_error_naming_the_near_key(tiny_root, tmp_path):
    from lisa_plugin.config import LisaConfigError

    with pytest.raises(LisaConfigError, match=r"no `lisa:` block.*plain full fine-tune\. Did you mean 'lisa' \(found 'lsia'\)\?"):
        load(tiny_root, tmp_path, lisa=None, lsia={"n_layers": 2})
    with pytest.raises(LisaConfigError, match=r"no `lisa:` block") as raised:
        load(tiny_root, tmp_path, lisa=None)
    assert "Did you mean" not in str(raised.value) and "lisa:\n  n_layers: 2" in str(raised.value)


def test_plugin_level_register_checks_only_configs_that_list_it():
    from axolotl.utils.dict import DictDefault

    from lisa_plugin import LISAPlugin
    from lisa_plugin.config import LisaConfigError

    plugin = LISAPlugin()
    plugin.register(DictDefault({"plugins": ["some.OtherPlugin"], "lsia": {}}))  # not ours to judge
    plugin.register(DictDefault({"plugins": ["lisa_plugin.LISAPlugin"], "lisa": {"n_layers": 2}}))
    with pytest.raises(LisaConfigError, match=r"^c\.yml: `plugins:` lists lisa_plugin\.LISAPlugin but .*found 'LISA_'"):
        plugin.register(DictDefault({"plugins": ["lisa_plugin.integrations.axolotl.LISAPlugin"], "LISA_": {},
                                     "axolotl_config_path": "c.yml"}))
    with pytest.raises(SystemExit) as raised:  # a command line that does not catch it prints only the message
        plugin.register(DictDefault({"plugins": ["lisa_plugin.LISAPlugin"], "lisa": {"interval_step": 5}}))
    assert raised.value.code.startswith("lisa.interval_step: unknown key. Did you mean 'interval_steps'?")
    assert LISAPlugin().add_callbacks_post_trainer(DictDefault({}), trainer=None) == []


def test_too_many_layers_fails_at_model_load(tiny_root, tmp_path):
    from transformers import AutoModelForCausalLM

    from lisa_plugin import LISAPlugin

    cfg = load(tiny_root, tmp_path, lisa={"n_layers": 9})
    model = AutoModelForCausalLM.from_pretrained(tiny_root / "model")
    with pytest.raises(ValueError, match=r"lisa.n_layers: 9 is more than the 6 decoder layers .*expected 1..6"):
        LISAPlugin().post_model_load(cfg, model)
