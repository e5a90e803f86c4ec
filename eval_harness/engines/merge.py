"""A LoRA run served as a full model: its adapter merged into the base once, kept in a cache.

The simplest form every engine serves alike (no ``--enable-lora``, no adapter name to route). The
copy's folder is named by a hash of the base model's path and the adapter's files, so a retrained
adapter gets a new copy and a finished one is reused by every later comparison.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from lisa_formats.atomic import write_json_atomic

DONE_MARKER = "eval_harness_merged.json"


def adapter_hash(base_model: str, adapter_path: str | Path) -> str:
    digest = hashlib.sha256(str(base_model).encode() + b"\0")
    for path in sorted(Path(adapter_path).iterdir()):
        if path.is_file() and path.name.startswith("adapter_"):  # adapter_config.json, adapter_model.*
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def merged_copy(base_model: str, adapter_path: str | Path, tokenizer: str, cache_dir: Path) -> Path:
    """A folder holding base + adapter merged (float32) and the run's tokenizer; built once per adapter."""
    target = Path(cache_dir) / f"merged-{adapter_hash(base_model, adapter_path)}"
    if (target / DONE_MARKER).is_file():
        return target
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # a copy interrupted half-way is rebuilt
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(partial)
    write_json_atomic(partial / DONE_MARKER, {"base_model": str(base_model), "adapter": str(adapter_path)})
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target
