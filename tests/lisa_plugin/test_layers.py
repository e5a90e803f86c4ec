import pytest
import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    BloomConfig,
    FalconConfig,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Phi3Config,
    Qwen2Config,
)

from lisa_plugin.core.layers import LayersNotFoundError, find_decoder_layers, partition_parameters, unwrap_model
from lisa_plugin.manager import get_plugin_manager

SMALL = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=100)
CONFIGS = {
    "llama": (LlamaConfig(num_hidden_layers=3, num_key_value_heads=2, **SMALL), "model.layers"),
    "mistral": (MistralConfig(num_hidden_layers=3, num_key_value_heads=2, **SMALL), "model.layers"),
    "qwen2": (Qwen2Config(num_hidden_layers=3, num_key_value_heads=2, **SMALL), "model.layers"),
    "gemma": (GemmaConfig(num_hidden_layers=3, num_key_value_heads=2, head_dim=16, **SMALL), "model.layers"),
    "phi3": (Phi3Config(num_hidden_layers=3, num_key_value_heads=2, pad_token_id=0, **SMALL), "model.layers"),
    "gpt2": (GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=100), "transformer.h"),
    "gpt_neox": (GPTNeoXConfig(num_hidden_layers=3, **SMALL), "gpt_neox.layers"),
    "opt": (OPTConfig(num_hidden_layers=3, ffn_dim=64, word_embed_proj_dim=32, hidden_size=32, num_attention_heads=2, vocab_size=100), "model.decoder.layers"),
    "falcon": (FalconConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=2, vocab_size=100), "transformer.h"),
    "bloom": (BloomConfig(n_layer=3, hidden_size=32, n_head=2, vocab_size=100), "transformer.h"),
}


def build(name):
    config, path = CONFIGS[name]
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config), path


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_finds_layers_of_common_architectures(name):
    import operator

    model, path = build(name)
    layers = find_decoder_layers(model, None, get_plugin_manager())
    assert layers is operator.attrgetter(path)(model)
    assert len(layers) == 3
    part = partition_parameters(model, layers)
    every = {id(p) for p in model.parameters()}
    covered = {id(p) for g in part.layers for p in g} | {id(p) for p in part.embeddings + part.head}
    assert covered == every  # nothing is left out of E / layers / H
    assert part.embeddings and part.head
    assert model.get_input_embeddings().weight in [p for p in part.embeddings]


def test_tied_embeddings_belong_to_both_e_and_h():
    model, _ = build("gpt2")  # GPT-2 ties wte and lm_head
    part = partition_parameters(model, find_decoder_layers(model, None, get_plugin_manager()))
    assert [p is model.transformer.wte.weight for p in part.tied()] == [True]
    assert any(p is model.transformer.ln_f.weight for p in part.head)
    assert any(p is model.transformer.wpe.weight for p in part.embeddings)
    # E off, H on: the tied tensor stays trainable (documented rule)
    assert any(p is model.transformer.wte.weight for p in part.always_trainable(False, True))


def test_unwraps_peft_compile_and_ddp(tmp_path):
    import torch.distributed as dist
    from peft import LoraConfig, get_peft_model

    model, _ = build("llama")
    layers = model.model.layers
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert find_decoder_layers(peft_model, None, get_plugin_manager()) is layers
    compiled = torch.compile(peft_model)
    assert unwrap_model(compiled) is model
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        assert find_decoder_layers(ddp, None, get_plugin_manager()) is layers
    finally:
        dist.destroy_process_group()


def test_layers_path_overrides_and_errors():
    model, _ = build("llama")
    assert find_decoder_layers(model, "model.layers", get_plugin_manager()) is model.model.layers
    with pytest.raises(LayersNotFoundError, match=r"lisa.layers_path: 'model.blocks' does not resolve"):
        find_decoder_layers(model, "model.blocks", get_plugin_manager())
    with pytest.raises(LayersNotFoundError, match=r"lisa.layers_path: 'model.norm' resolves to LlamaRMSNorm"):
        find_decoder_layers(model, "model.norm", get_plugin_manager())


def test_unknown_architecture_falls_back_to_a_hook():
    from lisa_plugin import hookimpl
    from lisa_plugin.manager import new_plugin_manager

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.stack = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])

    pm = new_plugin_manager(autoload=False)
    with pytest.raises(LayersNotFoundError, match="set lisa.layers_path"):
        find_decoder_layers(Odd(), None, pm)

    class Finder:
        @hookimpl
        def lisa_find_layers(self, model):
            return getattr(model, "stack", None)

    pm.register(Finder())
    odd = Odd()
    assert find_decoder_layers(odd, None, pm) is odd.stack
