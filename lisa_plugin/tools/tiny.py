"""Build a tiny, randomly initialised causal LM and its tokenizer, locally and offline.

The model is saved with ``save_pretrained`` so Axolotl and transformers load it
through their ordinary code paths (``base_model: path/to/dir``). The tokenizer is a
byte-level BPE trained with ``tokenizers`` on :mod:`lisa_plugin.tools.corpus`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from lisa_plugin.tools.corpus import instruction_examples, paragraphs

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
ARCHITECTURES = ("llama", "gpt2", "gpt_neox")


@dataclass
class TinySpec:
    arch: str = "llama"
    vocab_size: int = 1024
    hidden_size: int = 64
    num_layers: int = 6
    num_heads: int = 4
    intermediate_size: int = 128
    max_positions: int = 256
    seed: int = 0


def build_tokenizer(output_dir: Path, vocab_size: int, seed: int = 0, extra_text: Iterable[str] = ()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL_TOKENS[k] for k in ("pad_token", "bos_token", "eos_token", "unk_token")],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = paragraphs(2000, seed=seed) + [
        f"{r['instruction']} {r['output']}" for r in instruction_examples(2000, seed=seed)
    ] + list(extra_text)
    tokenizer.train_from_iterator(text, trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
    fast.save_pretrained(output_dir)
    return fast


def model_config(spec: TinySpec, tokenizer):
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    ids = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if spec.arch in ("llama", "gpt_neox"):
        extra = {"num_key_value_heads": spec.num_heads} if spec.arch == "llama" else {}
        return (LlamaConfig if spec.arch == "llama" else GPTNeoXConfig)(
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            max_position_embeddings=spec.max_positions,
            tie_word_embeddings=False,
            **extra,
            **ids,
        )
    if spec.arch == "gpt2":  # ties its embeddings: the LISA tests need one such layout
        return GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=spec.hidden_size,
            n_layer=spec.num_layers,
            n_head=spec.num_heads,
            n_inner=spec.intermediate_size,
            n_positions=spec.max_positions,
            **ids,
        )
    raise ValueError(f"arch: unknown architecture {spec.arch!r}; expected one of {', '.join(ARCHITECTURES)}")


def build_tiny_model(output_dir: str | Path, spec: TinySpec | None = None, extra_text: Iterable[str] = ()) -> Path:
    """Write a tokenizer and a random-init model of ``spec`` into ``output_dir``; the tokenizer
    learns from :mod:`lisa_plugin.tools.corpus` plus ``extra_text`` (text the model will see)."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = spec or TinySpec()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(output_dir, spec.vocab_size, spec.seed, extra_text)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(model_config(spec, tokenizer))
    model.save_pretrained(output_dir)
    return output_dir


def write_instruction_data(path: str | Path, n: int = 256, seed: int = 0) -> Path:
    """Alpaca-format JSONL for a tiny fine-tune (``type: alpaca``, ``ds_type: json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for record in instruction_examples(n, seed=seed):
            fh.write(json.dumps(record) + "\n")
    return path
