"""MT-Bench (Zheng et al., 2023, https://arxiv.org/abs/2306.05685): 80 two-turn questions graded by an LLM judge.

Not an lm-eval task: ``eval_harness.mt_bench`` answers and judges it in FastChat's formats.
Its files (``question.jsonl``, ``judge_prompts.jsonl``, ``reference_answer/gpt-4.jsonl``) come from
``--mt-bench-dir``, else ``DATA_DIR/mt_bench`` (``--data-dir``), else FastChat's repository
(:func:`resolve_dir`). The demo data are our own questions, prompts and reference answers in
FastChat's layout (the reference file keeps the name FastChat's tools look for; its answers are
ours, and say so in ``model_id``).
"""

from __future__ import annotations

from pathlib import Path

from lisa_formats.atomic import write_jsonl_atomic

from eval_harness.benchmarks.registry import MT_BENCH, Benchmark, Headline, register_benchmark


def resolve_dir(mt_bench_dir: Path | None, data_dir: Path | None) -> Path | None:
    """Where the MT-Bench files are read from: ``--mt-bench-dir``, else ``DATA_DIR/mt_bench`` when
    it exists, else None (FastChat's files, downloaded into the cache)."""
    if mt_bench_dir is not None:
        return Path(mt_bench_dir)
    if data_dir is not None and (Path(data_dir) / MT_BENCH).is_dir():
        return Path(data_dir) / MT_BENCH
    return None


# --------------------------------------------------------------------------- demo data

# (category, turn 1, turn 2, reference answers for the categories FastChat judges against one)
MT_BENCH_QUESTIONS = [
    ("writing", "Write a short note inviting your neighbours to a garden party on Saturday.",
     "Now rewrite the note as a poem of four lines.", None),
    ("writing", "Describe a quiet morning at a harbour in three sentences.",
     "Rewrite it so that every sentence mentions a colour.", None),
    ("roleplay", "You are a librarian. A child asks you for a book about the moon. What do you say?",
     "The child says they do not like reading. How do you answer?", None),
    ("roleplay", "Pretend to be a baker explaining why bread needs time to rise.",
     "Now explain it to a customer who is in a hurry, in one sentence.", None),
    ("reasoning", "Ada is taller than Bruno, and Bruno is taller than Chen. Who is the shortest?",
     "Dara is shorter than Chen. Who is the shortest now?",
     ("Chen is the shortest: Ada > Bruno > Chen.", "Dara is the shortest, since Dara is shorter than Chen.")),
    ("reasoning", "A shop opens at 9 and closes 8 hours later. When does it close?",
     "On Sundays it opens two hours later and closes at the same time. How long is it open on Sundays?",
     ("It closes at 17:00 (5 pm).", "It opens at 11 and closes at 17, so it is open 6 hours.")),
    ("math", "Emil has 14 marbles and buys 3 bags of 6 marbles. How many marbles does he have?",
     "He then gives half of them to Farah. How many does he keep?",
     ("14 + 3 * 6 = 32 marbles.", "Half of 32 is 16, so he keeps 16 marbles.")),
    ("math", "What is 15% of 240?", "What is 240 increased by 15%?",
     ("0.15 * 240 = 36.", "240 + 36 = 276.")),
    ("coding", "Write a Python function that returns the largest number in a list.",
     "Change it so that it returns None for an empty list.",
     ("def largest(xs):\n    return max(xs)",
      "def largest(xs):\n    return max(xs) if xs else None")),
    ("coding", "Write a Python function that counts the vowels in a string.",
     "Make it ignore upper and lower case differences.",
     ("def vowels(s):\n    return sum(c in 'aeiou' for c in s)",
      "def vowels(s):\n    return sum(c in 'aeiou' for c in s.lower())")),
    ("extraction", "From 'Hana visited the library on 3 May and the bakery on 5 May', list the places and dates.",
     "Return the same as JSON with keys place and date.", None),
    ("extraction", "Which numbers appear in: 'Ivo has 12 stamps, Jun has 7 and Kira has 30'?",
     "Which of those numbers is the largest?", None),
    ("stem", "Why does water boil at a lower temperature on a high mountain?",
     "What does that mean for cooking pasta up there?", None),
    ("stem", "Explain in two sentences how bees help crops grow.",
     "What could happen to fruit harvests if bees disappeared?", None),
    ("humanities", "Why do many towns have a market square?",
     "How have markets changed since shops moved online?", None),
    ("humanities", "What makes a library useful to a small town?",
     "Suggest one new service a library could offer.", None),
]


def mt_bench_records() -> tuple[list[dict], list[dict]]:
    """(question.jsonl records, reference-answer records)."""
    questions, references = [], []
    for i, (category, first, second, reference) in enumerate(MT_BENCH_QUESTIONS, start=1):
        questions.append({"question_id": i, "category": category, "turns": [first, second]})
        if reference:
            references.append({"question_id": i, "answer_id": f"demo-{i}", "model_id": "eval-harness-demo-reference",
                               "choices": [{"index": 0, "turns": list(reference)}], "tstamp": 0.0})
    return questions, references


_RATE = ("Rate the response from 1 to 10 and end with the rating in double brackets, "
         "for example: \"Rating: [[6]]\".")
_PICK = ("Reply with your reasons, then the verdict in double brackets: \"[[A]]\" if A is better, "
         "\"[[B]]\" if B is better, \"[[C]]\" for a tie.")
_REF_NOTE = "Compare the answer with the reference answer and count every mistake against it. "


def _turns(prefix: str, answer: str, ref: bool) -> str:
    """The two-turn transcript that multi-turn prompts show, with optional reference turns."""
    parts = []
    if ref:
        parts.append("<|Reference|>\n### User:\n{question_1}\n### Reference:\n{ref_answer_1}\n"
                     "### User:\n{question_2}\n### Reference:\n{ref_answer_2}\n<|End of Reference|>")
    parts.append(f"<|{prefix}|>\n### User:\n{{question_1}}\n### {prefix}:\n{{{answer}_1}}\n"
                 f"### User:\n{{question_2}}\n### {prefix}:\n{{{answer}_2}}\n<|End of {prefix}|>")
    return "\n\n".join(parts)


def judge_prompts() -> list[dict[str, str]]:
    """FastChat's judge_prompts.jsonl records (names, types, placeholders), in our own words."""
    system = "You grade answers written by AI assistants. Be strict, fair and brief."
    single_intro = "Grade how helpful, correct and clear the assistant's answer to the user's question is. "
    multi_intro = "Grade the assistant's answer to the user's second question, using the first exchange as context. "
    pair_intro = "Two assistants answered the same question. Decide which answer is better; order and length must not sway you. "
    ref_block = "[Reference answer]\n{ref_answer_1}\n\n"
    out = [
        ("single-v1", "single", system, single_intro + _RATE
         + "\n\n[Question]\n{question}\n\n[Answer]\n{answer}\n[End of answer]", "general", "[[rating]]"),
        ("single-math-v1", "single", system, single_intro + _REF_NOTE + _RATE
         + "\n\n[Question]\n{question}\n\n" + ref_block + "[Answer]\n{answer}\n[End of answer]", "math", "[[rating]]"),
        ("single-v1-multi-turn", "single", system, multi_intro + _RATE + "\n\n"
         + _turns("Assistant", "answer", False), "general", "[[rating]]"),
        ("single-math-v1-multi-turn", "single", system, multi_intro + _REF_NOTE + _RATE + "\n\n"
         + _turns("Assistant", "answer", True), "math", "[[rating]]"),
        ("pair-v2", "pairwise", system, pair_intro + _PICK
         + "\n\n[Question]\n{question}\n\n[Answer A]\n{answer_a}\n[End of answer A]\n\n"
         "[Answer B]\n{answer_b}\n[End of answer B]", "general", "[[A]]"),
        ("pair-v2-multi-turn", "pairwise", system, pair_intro + "Judge the answers to the second question. " + _PICK
         + "\n\n" + _turns("Assistant A", "answer_a", False) + "\n\n" + _turns("Assistant B", "answer_b", False),
         "general", "[[A]]"),
        ("pair-math-v1", "pairwise", system, pair_intro + _REF_NOTE + _PICK + "\n\n[Question]\n{question}\n\n"
         + ref_block + "[Answer A]\n{answer_a}\n[End of answer A]\n\n[Answer B]\n{answer_b}\n[End of answer B]",
         "math", "[[A]]"),
        ("pair-math-v1-multi-turn", "pairwise", system, pair_intro + _REF_NOTE + "Judge the answers to the second "
         "question. " + _PICK + "\n\n" + _turns("Assistant A", "answer_a", True) + "\n\n"
         + _turns("Assistant B", "answer_b", False), "math", "[[A]]"),
    ]
    return [{"name": n, "type": t, "system_prompt": s, "prompt_template": p,
             "description": f"eval_harness demo prompt ({t}, {c})", "category": c, "output_format": f}
            for n, t, s, p, c, f in out]


def write_demo_data(data_dir: Path, test_items: int | None = None) -> None:
    """``mt_bench/`` in FastChat's layout (all 16 demo questions; ``test_items`` is not used)."""
    folder = Path(data_dir) / MT_BENCH
    questions, references = mt_bench_records()
    write_jsonl_atomic(folder / "question.jsonl", questions)
    write_jsonl_atomic(folder / "judge_prompts.jsonl", judge_prompts())
    write_jsonl_atomic(folder / "reference_answer" / "gpt-4.jsonl", references)


MT_BENCH_BENCHMARK = register_benchmark(Benchmark(
    name=MT_BENCH,
    lm_eval_task=None,
    headlines=(Headline("MT-Bench", "overall", percent=False),),
    demo_data=write_demo_data,
    description="two-turn chat questions graded 1-10 by an LLM judge (FastChat llm_judge)",
    stratify_by="category",
    max_new_tokens=1024,  # FastChat's gen_model_answer default
))
