import pytest
import yaml

from lisa_plugin import LisaConfig
from lisa_plugin.integrations.axolotl import LisaArgs
from lisa_plugin.tools.axolotl_runner import example_configs_dir

CONFIGS = example_configs_dir()
METHOD_KEYS = {"plugins", "lisa", "adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_linear",
               "lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "output_dir", "learning_rate"}
FAMILIES = sorted({p.name.rsplit("-", 1)[0] for p in CONFIGS.glob("*-lisa.yml")})


@pytest.mark.parametrize("family", FAMILIES)
def test_twins_differ_only_in_the_method(family):
    cfgs = {m: yaml.safe_load((CONFIGS / f"{family}-{m}.yml").read_text()) for m in ("lisa", "lora", "full")}
    validated = LisaArgs.model_validate(cfgs["lisa"]).lisa
    assert validated == LisaConfig(**cfgs["lisa"]["lisa"])
    assert validated.model_dump() == {**LisaConfig().model_dump(), **cfgs["lisa"]["lisa"]}  # every key it sets is used
    assert cfgs["lora"]["adapter"] == "lora" and "lisa" not in cfgs["lora"] and "lisa" not in cfgs["full"]
    shared = [{k: v for k, v in c.items() if k not in METHOD_KEYS} for c in cfgs.values()]
    assert shared[0] == shared[1] == shared[2]


def test_paper_settings():
    assert FAMILIES == ["llama2-70b", "llama2-7b", "mistral-7b", "smollm2", "tiny"]
    big = yaml.safe_load((CONFIGS / "llama2-70b-lisa.yml").read_text())["lisa"]
    assert big["n_layers"] == 4
    for family in ("llama2-7b", "mistral-7b"):
        assert yaml.safe_load((CONFIGS / f"{family}-lisa.yml").read_text())["lisa"]["n_layers"] == 2
