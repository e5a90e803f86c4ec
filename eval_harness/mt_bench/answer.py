"""Stage 1: generate the model's answers to MT-Bench, in FastChat's model_answer format.

Unlike FastChat's gen_model_answer.py this runs on any device (not only CUDA), loads a
PEFT adapter on top of its base model in memory (no merged copy on disk), batches questions
whatever their temperatures (each row of a batch is decoded at its own question's temperature:
:class:`RowTemperature`), and never falls back silently to the ``one_shot``
template, whose canned example would leak into every answer (FastChat #2783). With an
``endpoint`` (``--backend server``) the same prompt strings go to an OpenAI-compatible server's
``/v1/completions`` instead, and its token ids are decoded here as ``generate``'s are.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lisa_formats.jsonl import JsonlAppender, read_jsonl
from lisa_formats.suggest import did_you_mean

from eval_harness.mt_bench.data import Question

if TYPE_CHECKING:
    from fastchat.conversation import Conversation

    from eval_harness.engines.backend import Endpoint

logger = logging.getLogger(__name__)

HF_CHAT_TEMPLATE = "hf-chat-template"
FALLBACK_TEMPLATE = "zero_shot"  # one_shot's system prompt and roles, without its canned example
GREEDY_BELOW = 1e-4  # FastChat: temperatures below this decode greedily
AUTO_BATCH_SIZE = 8


def parse_batch_size(value: int | str | None) -> int:
    """An int, or lm-eval's spelling ("8", "auto", "auto:N"); auto means AUTO_BATCH_SIZE here."""
    if value is None or (isinstance(value, str) and value.startswith("auto")):
        return AUTO_BATCH_SIZE
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < 1:
        raise ValueError(f"batch_size: got {value!r}; expected a positive integer or 'auto'")
    return size


@dataclass(frozen=True)
class ChatFormat:
    """How a conversation becomes a prompt: a FastChat template, or the tokenizer's own."""

    name: str
    reason: str

    def prompt(self, tokenizer, turns: list[str], answers: list[str]) -> str:
        """The prompt asking for the answer to ``turns[-1]``, given earlier ``answers``."""
        if self.name == HF_CHAT_TEMPLATE:
            messages = []
            for i, question in enumerate(turns):
                messages.append({"role": "user", "content": question})
                if i < len(answers):
                    messages.append({"role": "assistant", "content": answers[i]})
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        conv = self.conversation()
        for i, question in enumerate(turns):
            conv.append_message(conv.roles[0], question)
            conv.append_message(conv.roles[1], answers[i] if i < len(answers) else None)
        return conv.get_prompt()

    def conversation(self) -> "Conversation":
        from fastchat.conversation import get_conv_template

        return get_conv_template(self.name)

    def stop_strings(self) -> list[str]:
        if self.name == HF_CHAT_TEMPLATE:
            return []
        stop = self.conversation().stop_str
        if not stop:
            return []
        return [stop] if isinstance(stop, str) else list(stop)

    def stop_token_ids(self) -> list[int]:
        if self.name == HF_CHAT_TEMPLATE:
            return []
        return list(self.conversation().stop_token_ids or [])


def resolve_template(template: str | None, tokenizer, model_path: str) -> ChatFormat:
    """The chat format to use, with the reason it was chosen (logged, and kept in the summary)."""
    from fastchat.conversation import conv_templates

    if template is not None:
        if template == HF_CHAT_TEMPLATE:
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError(f"template: {template!r} requested but the tokenizer of {model_path} has no chat template")
            return ChatFormat(HF_CHAT_TEMPLATE, "requested")
        if template not in conv_templates:
            choices = [HF_CHAT_TEMPLATE, *sorted(conv_templates)]
            raise ValueError(f"template: unknown FastChat conversation template {template!r}.{did_you_mean(template, choices)} "
                             f"Available: {', '.join(choices)}")
        return ChatFormat(template, "requested")
    if getattr(tokenizer, "chat_template", None):
        return ChatFormat(HF_CHAT_TEMPLATE, "the tokenizer's chat template")
    name, adapter = _fastchat_default(model_path)
    if name is not None:
        chosen = ChatFormat(name, f"FastChat's {adapter} for the model name")
    else:
        chosen = ChatFormat(FALLBACK_TEMPLATE, "fallback: no template given, no chat template, unknown model name")
    logger.warning(
        "MT-Bench: no template given and %s has no chat template; using FastChat template %r (%s). "
        "Pass template= (--template) with the format the model was trained on.",
        model_path,
        chosen.name,
        chosen.reason,
    )
    return chosen


def _fastchat_default(model_path: str) -> tuple[str | None, str | None]:
    """FastChat's template for a recognised model name; None where it would fall back to one_shot."""
    import os

    from fastchat.model.model_adapter import BaseModelAdapter, model_adapters

    basename = os.path.basename(os.path.normpath(model_path))
    for adapter in model_adapters:
        if type(adapter) is not BaseModelAdapter and adapter.match(basename):
            name = adapter.get_default_conv_template(model_path).name
            if name != "one_shot":
                return name, type(adapter).__name__
            break
    return None, None


def load_tokenizer(model_path: str, adapter_path: str | None):
    from transformers import AutoTokenizer

    source = adapter_path if adapter_path and (Path(adapter_path) / "tokenizer_config.json").exists() else model_path
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_path: str, adapter_path: str | None, device: str, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype, None)
    if torch_dtype is None or (dtype != "auto" and not isinstance(torch_dtype, torch.dtype)):
        raise ValueError(f"dtype: got {dtype!r}; expected auto, float32, float16 or bfloat16")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype)
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path)
    return model.to(device).eval()


def pick_device(device: str | None) -> str:
    if device:
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def answered_ids(answer_file: Path) -> set[int]:
    return {int(r["question_id"]) for r in read_jsonl(answer_file)}


def generate_answers(
    questions: list[Question],
    answer_file: Path,
    *,
    model_id: str,
    model_path: str,
    adapter_path: str | None,
    tokenizer,
    chat: ChatFormat,
    max_new_tokens: int = 1024,
    device: str | None = None,
    dtype: str = "float32",
    batch_size: int | str | None = 8,
    seed: int = 0,
    endpoint: "Endpoint | None" = None,
    concurrency: int = 8,
) -> int:
    """Answer the questions not yet in ``answer_file``; returns how many were generated.

    ``endpoint``: generate through that server's ``/v1/completions`` (the same prompt strings,
    ``concurrency`` requests in flight) instead of loading the model here."""
    from tqdm.auto import tqdm

    batch_size = parse_batch_size(batch_size)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: got {max_new_tokens}; expected at least 1")
    done = answered_ids(answer_file)
    pending = [q for q in questions if q.question_id not in done]
    if not pending:
        return 0
    if endpoint is None:
        device = pick_device(device)
        model = load_model(model_path, adapter_path, device, dtype)

        by_temperature = not mixes_temperatures(model)

        def generate(prompts, temperatures):
            return _generate(model, tokenizer, chat, prompts, temperatures, max_new_tokens, device, seed)
    else:
        batch_size = max(batch_size, 2 * concurrency)  # keep every request slot busy
        by_temperature = False  # every request carries its own temperature

        def generate(prompts, temperatures):
            return _generate_served(endpoint, tokenizer, chat, prompts, temperatures, max_new_tokens, seed,
                                    concurrency)
    with JsonlAppender(answer_file) as out, tqdm(total=len(pending), desc=f"MT-Bench answers ({model_id})") as bar:
        for batch in _batches(pending, batch_size, by_temperature):
            answers: list[list[str]] = [[] for _ in batch]
            for turn in range(2):
                prompts = [chat.prompt(tokenizer, list(q.turns[: turn + 1]), a) for q, a in zip(batch, answers)]
                for a, reply in zip(answers, generate(prompts, [q.temperature for q in batch])):
                    a.append(reply)
            for q, a in zip(batch, answers):
                out.write({"question_id": q.question_id, "answer_id": uuid.uuid4().hex, "model_id": model_id,
                           "choices": [{"index": 0, "turns": a}], "tstamp": time.time()})
            bar.update(len(batch))
    return len(pending)


def _batches(pending: list[Question], batch_size: int, by_temperature: bool = False) -> list[list[Question]]:
    """Batches in question order (``by_temperature``: only questions sharing a temperature share a batch,
    for a model whose sampling settings :func:`mixes_temperatures` refuses); the sort keeps them reproducible.

    MT-Bench's categories come with three temperatures, so grouping split 16 questions into batches
    of 4, 8 and 4; on a CPU a step of 4 rows takes about as long as one of 8 (SmolLM2-135M), so
    that was a third more generate() calls for the same answers."""
    pending = sorted(pending, key=lambda q: (q.temperature, q.question_id) if by_temperature else q.question_id)
    groups = [[q for q in pending if q.temperature == t] for t in sorted({q.temperature for q in pending})]
    return [group[i : i + batch_size]
            for group in (groups if by_temperature else [pending])
            for i in range(0, len(group), batch_size)]


class RowTemperature:
    """A logits processor that decodes each row of a batch at its own temperature, exactly as generate()
    would decode that row alone: scores divided by the row's temperature (generate() then applies the
    model's own top-k/top-p after it, as after its temperature warper); a greedy row (temperature below
    ``GREEDY_BELOW``) keeps only its arg-max, so sampling it is greedy decoding."""

    def __init__(self, temperatures: list[float], device):
        import torch

        self.temperatures = torch.tensor(temperatures, dtype=torch.float32, device=device)
        self.greedy = self.temperatures < GREEDY_BELOW

    def __call__(self, input_ids, scores):
        import torch

        scaled = scores / self.temperatures.clamp(min=GREEDY_BELOW).to(scores.dtype)[:, None]
        if bool(self.greedy.any()):
            only_best = torch.full_like(scores, float("-inf"))
            only_best.scatter_(1, scores.argmax(dim=-1, keepdim=True), 0.0)
            scaled = torch.where(self.greedy[:, None], only_best, scaled)
        return scaled


def mixes_temperatures(model) -> bool:
    """Whether one batch may hold rows of different temperatures (:class:`RowTemperature`) for this model:
    not when its generation config asks for a filter that generate() applies after the temperature and that
    cannot take a greedy row, left with one finite score (typical-p's entropy is NaN there; epsilon, eta and
    top-h likewise)."""
    config = getattr(model, "generation_config", None)
    typical_p = getattr(config, "typical_p", None)
    if typical_p is not None and typical_p < 1.0:
        return False
    return not any(getattr(config, name, None) for name in ("epsilon_cutoff", "eta_cutoff", "top_h"))


def _generate_served(endpoint: "Endpoint", tokenizer, chat: ChatFormat, prompts, temperatures, max_new_tokens, seed,
                     concurrency) -> list[str]:
    """As :func:`_generate`, through the server: greedy at temperature 0, the same stop tokens and strings."""
    from eval_harness.engines.completions import Sampling, complete_all

    add_special = chat.name != HF_CHAT_TEMPLATE
    stop_ids = [i for i in [tokenizer.eos_token_id, *chat.stop_token_ids()] if i is not None]
    samplings = []
    for prompt, temperature in zip(prompts, temperatures, strict=True):
        sampling = temperature >= GREEDY_BELOW
        budget = max_new_tokens
        if endpoint.max_model_len:  # the server refuses a request past its context; hf would run on
            used = len(tokenizer(prompt, add_special_tokens=add_special)["input_ids"])
            budget = max(1, min(max_new_tokens, endpoint.max_model_len - used))
        samplings.append(Sampling(budget, temperature if sampling else 0.0, chat.stop_strings(), stop_ids, add_special,
                                  seed if sampling else None))
    return [_served_text(choice, tokenizer, stop_ids, chat) for choice in complete_all(endpoint, prompts, samplings,
                                                                                       concurrency)]


def _served_text(choice: dict, tokenizer, stop_ids: list[int], chat: ChatFormat) -> str:
    """The answer, decoded here from the token ids where the server returns them (vLLM does), exactly as
    :func:`_generate` decodes; vLLM's own text drops a trailing incomplete UTF-8 character that hf shows as U+FFFD."""
    ids = choice.get("token_ids")
    if not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
        return _clean(choice["text"], chat)
    cut = next((i for i, token in enumerate(ids) if token in stop_ids), len(ids))
    return _clean(tokenizer.decode(ids[:cut], skip_special_tokens=True), chat)


def _clean(text: str, chat: ChatFormat) -> str:
    for stop in chat.stop_strings():
        text = text.split(stop, 1)[0]
    return text.strip()


def _generate(model, tokenizer, chat: ChatFormat, prompts, temperatures, max_new_tokens, device, seed) -> list[str]:
    import torch

    add_special = chat.name != HF_CHAT_TEMPLATE  # chat templates write their own BOS
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special).to(device)
    stop_ids = [i for i in [tokenizer.eos_token_id, *chat.stop_token_ids()] if i is not None]
    if len(set(temperatures)) > 1:  # each row at its own temperature, greedy rows greedy
        kwargs = dict(do_sample=True, temperature=1.0, logits_processor=[RowTemperature(temperatures, device)])
    elif temperatures[0] >= GREEDY_BELOW:
        kwargs = dict(do_sample=True, temperature=temperatures[0])
    else:
        kwargs = dict(do_sample=False)
    # generate() samples from torch's global generator; seeding it per batch makes reruns reproducible
    torch.manual_seed(seed)
    with torch.no_grad():
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            eos_token_id=stop_ids,
            pad_token_id=tokenizer.pad_token_id,
            **kwargs,
        )
    replies = []
    for row in output[:, inputs["input_ids"].shape[1] :].tolist():
        cut = next((i for i, token in enumerate(row) if token in stop_ids), len(row))
        replies.append(_clean(tokenizer.decode(row[:cut], skip_special_tokens=True), chat))
    return replies
