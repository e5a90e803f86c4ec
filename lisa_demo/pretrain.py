"""A short causal-LM pre-training of the demo's tiny model on our own text.

Fine-tuning a random-init model would compare three ways of fitting noise; a few hundred
steps on :func:`eval_harness.demo.data.pretraining_text` give it word statistics and the
"Question:/Answer:" shape first, so the methods differ in what they add on top.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable


def pretrain(model_dir: Path, output_dir: Path, texts: list[str], *, steps: int, batch_size: int = 8,
             seq_len: int = 128, learning_rate: float = 3e-3, seed: int = 0,
             progress: Callable[[str], None] = print) -> dict:
    """Train ``model_dir``'s model for ``steps`` AdamW steps on ``texts`` packed into ``seq_len``
    blocks; save model and tokenizer into ``output_dir``; return the loss record
    (also written as ``pretrain.json``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    generator = torch.Generator().manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    n_blocks = len(ids) // seq_len
    if n_blocks < batch_size:
        raise ValueError(f"pre-training text: {len(ids)} tokens make {n_blocks} blocks of {seq_len}; "
                         f"expected at least batch_size={batch_size}")
    blocks = torch.tensor(ids[: n_blocks * seq_len]).view(n_blocks, seq_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    losses, start = [], time.time()
    for step in range(1, steps + 1):
        batch = blocks[torch.randint(n_blocks, (batch_size,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        if step == 1 or step % max(1, steps // 5) == 0 or step == steps:
            progress(f"  pre-training step {step}/{steps}: loss {loss.item():.3f} ({time.time() - start:.0f}s)")
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    record = {"steps": steps, "batch_size": batch_size, "seq_len": seq_len, "learning_rate": learning_rate,
              "tokens": len(ids), "first_loss": losses[0], "last_loss": losses[-1],
              "seconds": round(time.time() - start, 1), "losses": losses}
    (output_dir / "pretrain.json").write_text(json.dumps(record))
    return record
