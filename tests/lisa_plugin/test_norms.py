"""The norms tool on real Axolotl runs (full, LoRA adapter, LISA) of one tiny base, and the ablation helper."""

import json
import math

import pytest
import torch
import yaml

from lisa_formats.norms import profile_weights
from lisa_plugin.core.history import read_history
from lisa_plugin.tools.cli import main
from lisa_plugin.tools.norms import measure_norms, model_layout

NUM_LAYERS = 6


@pytest.fixture(scope="module")
def profile(axolotl_runs, tiny_root):
    return measure_norms(tiny_root / "model", [axolotl_runs / m for m in ("full", "lora", "lisa")])


# Small configs of four layouts; the norms tool builds each on the meta device, as training finds its layers.
LAYOUT_CONFIGS = {
    "llama": dict(model_type="llama", vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=8,
                  num_attention_heads=2, tie_word_embeddings=False),
    "gpt2": dict(model_type="gpt2", vocab_size=64, n_embd=16, n_layer=12, n_head=2, n_positions=32),
    "gpt_neox": dict(model_type="gpt_neox", vocab_size=64, hidden_size=16, intermediate_size=32,
                     num_hidden_layers=4, num_attention_heads=2, tie_word_embeddings=False),
    "opt": dict(model_type="opt", vocab_size=64, hidden_size=16, ffn_dim=32, num_hidden_layers=8,
                num_attention_heads=2, word_embed_proj_dim=16),
}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    from transformers import AutoConfig

    found = {}
    for arch, kwargs in LAYOUT_CONFIGS.items():
        kwargs = dict(kwargs)
        folder = tmp_path_factory.mktemp(arch)
        AutoConfig.for_model(kwargs.pop("model_type"), **kwargs).save_pretrained(folder)
        found[arch] = model_layout(folder)
    return found


@pytest.mark.parametrize(
    "arch,name,group",
    [
        ("llama", "model.layers.3.self_attn.q_proj.weight", ("layer", 3)),
        ("gpt2", "transformer.h.11.mlp.c_fc.weight", ("layer", 11)),
        ("gpt2", "h.0.attn.c_attn.bias", ("layer", 0)),
        ("gpt_neox", "gpt_neox.layers.2.attention.dense.weight", ("layer", 2)),
        ("opt", "model.decoder.layers.7.fc1.weight", ("layer", 7)),
        ("llama", "base_model.model.model.layers.4.mlp.up_proj", ("layer", 4)),
        ("llama", "model.embed_tokens.weight", ("embedding", None)),
        ("gpt2", "transformer.wpe.weight", ("embedding", None)),
        ("gpt2", "transformer.wte.weight", ("embedding", None)),
        ("llama", "model.norm.weight", ("head", None)),
        ("llama", "lm_head.weight", ("head", None)),
        ("opt", "model.decoder.embed_positions.weight", ("embedding", None)),
        ("gpt_neox", "gpt_neox.embed_in.weight", ("embedding", None)),
        # GPT-NeoX's untied LM head: a name regex filed it under E, the layer finder knows it is H.
        ("gpt_neox", "embed_out.weight", ("head", None)),
        ("gpt_neox", "gpt_neox.final_layer_norm.weight", ("head", None)),
    ],
)
def test_layer_groups_come_from_the_training_layer_finder(layouts, arch, name, group):
    assert layouts[arch].group(name) == group


def test_shapes_and_kinds(profile):
    assert [r.name for r in profile.runs] == ["full", "lora", "lisa"]
    assert [r.source for r in profile.runs] == ["weights", "lora", "weights"]
    for run in profile.runs:
        assert [row.layer for row in run.layers] == ["embedding", *map(str, range(NUM_LAYERS)), "head"]
        assert all(row.update_norm >= 0 and row.base_norm > 0 for row in run.layers)
    full = profile.runs[0]
    assert all(row.update_norm > 0 for row in full.layers)  # full fine-tuning moves everything
    for row in full.layers:
        assert row.relative_norm == pytest.approx(row.update_norm / row.base_norm)


def test_lisa_layers_never_sampled_did_not_move(profile, axolotl_runs):
    counts = read_history(axolotl_runs / "lisa").activation_counts
    lisa = profile.runs[2]
    assert 0 in counts, "the fixture run should leave some layer unsampled"
    for layer, count in enumerate(counts):
        norm = lisa.layers[layer + 1].update_norm
        assert (norm == 0.0) if count == 0 else (norm > 0), (layer, count, norm)
    assert lisa.layers[0].update_norm > 0 and lisa.layers[-1].update_norm > 0  # E and H always train


def test_lora_update_equals_the_merged_difference(profile, axolotl_runs, tiny_root):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_root / "model", dtype=torch.float32)
    before = {n: p.detach().clone().double() for n, p in base.named_parameters()}
    merged = PeftModel.from_pretrained(base, axolotl_runs / "lora").merge_and_unload()
    layout = model_layout(tiny_root / "model")
    squared = {}
    for name, p in merged.named_parameters():
        key = layout.group(name)
        squared[key] = squared.get(key, 0.0) + float(((p.double() - before[name]) ** 2).sum())
    lora = profile.runs[1]
    assert lora.layers[0].update_norm == 0 and lora.layers[-1].update_norm == 0
    for i in range(NUM_LAYERS):
        expected = math.sqrt(squared[("layer", i)])
        assert expected > 0
        assert lora.layers[i + 1].update_norm == pytest.approx(expected, rel=1e-4)


def test_sharded_checkpoint_gives_the_same_norms(profile, axolotl_runs, tiny_root, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(axolotl_runs / "full")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="200KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    again = measure_norms(tiny_root / "model", [tmp_path / "sharded"]).runs[0]
    for a, b in zip(again.layers, profile.runs[0].layers):
        assert a.update_norm == pytest.approx(b.update_norm, rel=1e-6)


def test_cli_writes_json_markdown_png_and_feeds_the_profile_strategy(axolotl_runs, tiny_root, tmp_path, capsys):
    out = tmp_path / "norms"
    assert main(["norms", str(tiny_root / "model"), str(axolotl_runs / "lora"), str(axolotl_runs / "lisa"),
                 "--output", str(out)]) == 0
    data = json.loads((out / "norms.json").read_text())
    assert data["format"] == "lisa_norms/1" and [r["name"] for r in data["runs"]] == ["lora", "lisa"]
    assert set(data["runs"][0]["layers"][0]) >= {"layer", "kind", "update_norm", "relative_norm"}
    table = (out / "norms.md").read_text()
    assert "| layer | lora update | lora relative | lisa update | lisa relative |" in table
    assert table.count("\n| ") == 1 + NUM_LAYERS + 2
    assert (out / "norms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    weights = profile_weights(out / "norms.json", "lora", NUM_LAYERS)
    assert len(weights) == NUM_LAYERS and all(w > 0 for w in weights)
    assert main(["norms", str(tiny_root / "model"), str(tmp_path / "missing"), "--output", str(out)]) == 1
    assert "missing: not a directory" in capsys.readouterr().err


def test_ablate_dry_run_writes_one_config_per_combination(tiny_root, tmp_path, capsys):
    from tests.conftest import axolotl_config

    config = tmp_path / "base.yml"
    config.write_text(yaml.safe_dump(axolotl_config("lisa", tiny_root, tmp_path / "unused")))
    out = tmp_path / "ablation"
    assert main(["ablate", str(config), "--n-layers", "1,2", "--interval-steps", "5,20", "--output", str(out),
                 "--dry-run", "--", "--limit", "2"]) == 0
    printed = capsys.readouterr().out
    names = [f"lisa-g{g}-k{k}" for g in (1, 2) for k in (5, 20)]
    for name in names:
        cfg = yaml.safe_load((out / f"{name}.yml").read_text())
        assert cfg["output_dir"] == str(out / name)
        assert (cfg["lisa"]["n_layers"], cfg["lisa"]["interval_steps"]) == (int(name[6]), int(name.split("-k")[1]))
        assert cfg["plugins"] == ["lisa_plugin.LISAPlugin"] and cfg["base_model"] == str(tiny_root / "model")
        assert f"train {out / name}.yml" in printed
    assert "[4/4]" in printed and f"eval_harness compare {out} --limit 2" in printed
    assert not any(p.is_dir() for p in out.iterdir())  # nothing trained


def test_ablate_rejects_a_bad_grid(tmp_path):
    with pytest.raises(SystemExit):
        main(["ablate", str(tmp_path / "x.yml"), "--n-layers", "0,2", "--dry-run"])
