"""The demo's two base models and everything that differs between them.

``smollm2`` (the default): SmolLM2-135M-Instruct, a real instruction-tuned model, fetched once
(:func:`lisa_plugin.tools.pretrained.ensure_model`), fine-tuned on chat-format word problems
with its own chat template, and evaluated with that template (lm-eval's ``apply_chat_template``,
MT-Bench answers through the tokenizer's template).

``tiny``: a 6-layer random-init Llama pre-trained for a few minutes on our own text; about four
minutes end to end, for a quick look at the pipeline and for tests. Its leaderboard shows that
the pipeline runs, not which method is better.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lisa_formats.suggest import unknown


@dataclass(frozen=True)
class DemoModel:
    name: str
    title: str  # what the report's demo sentence calls it
    config_prefix: str  # example_configs/{prefix}-{lisa,lora,full}.yml
    chat: bool  # chat-format training data, chat template at evaluation
    train_steps: int
    train_examples: int
    limit: int  # held-out items per benchmark
    max_new_tokens: int
    tasks: tuple[str, ...]
    fewshot: dict[str, int] = field(default_factory=dict)
    threads: int | None = None  # torch threads for evaluation and training (None: all cores)
    note: str = ""  # what this demo can and cannot show: one sentence for the report

    def sentence(self, steps: int, items: int) -> str:
        return self.note.format(steps=steps, items=items)


SMOLLM2 = DemoModel(
    name="smollm2",
    title="SmolLM2-135M-Instruct",
    config_prefix="smollm2",
    chat=True,
    train_steps=20,
    train_examples=480,
    limit=50,
    max_new_tokens=96,
    tasks=("gsm8k", "mt_bench"),
    fewshot={"gsm8k": 0},
    note=("This page comes from the demo: SmolLM2-135M-Instruct fine-tuned for {steps} steps on templated "
          "arithmetic word problems in chat format and scored on {items} held-out problems of the same templates "
          "(zero-shot, its chat template), so it shows whether each method learns an in-domain task (much of it the "
          "'#### N' answer line that strict match needs and Vanilla rarely writes; flexible-extract shows the rest) "
          "and what each costs in memory and time on this machine; one seed of a 135M model on synthetic data "
          "cannot show how the methods rank on real benchmarks or at scale."),
)

TINY = DemoModel(
    name="tiny",
    title="a tiny random-init Llama",
    config_prefix="tiny",
    chat=False,
    train_steps=120,
    train_examples=1000,
    limit=40,
    max_new_tokens=64,
    tasks=("mt_bench", "gsm8k", "pubmedqa"),
    threads=1,  # its matrices are too small to split: two threads on two busy cores were 14x slower
    note=("This page comes from the demo's tiny model: a 1.2M-parameter Llama pre-trained for minutes on our own "
          "text, fine-tuned for {steps} steps and scored on {items} items per benchmark, so it shows that the "
          "pipeline runs end to end, but nothing about how the methods compare in quality."),
)

DEMO_MODELS = {m.name: m for m in (SMOLLM2, TINY)}
DEFAULT_DEMO_MODEL = SMOLLM2.name


def demo_model(name: str) -> DemoModel:
    if name not in DEMO_MODELS:
        raise ValueError(unknown("demo model", name, DEMO_MODELS))
    return DEMO_MODELS[name]
