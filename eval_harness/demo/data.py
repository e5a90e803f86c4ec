"""Benchmark-format data we wrote ourselves, for the offline demo.

Every item is produced from templates with a seeded generator; nothing is copied from
GSM8K, PubMedQA or MT-Bench. Only the *formats* are theirs, so ``compare --data-dir``
reads these files through exactly the code that reads the real ones:

* ``gsm8k/{train,test}.jsonl``: ``{"question", "answer"}``, the answer a worked solution
  with calculator notes (``<<3*4=12>>``) ending in ``#### N``;
* ``pubmedqa/ori_pqal.json`` (dict keyed by an id, ``QUESTION``, ``CONTEXTS``, ``LABELS``,
  ``LONG_ANSWER``, ``final_decision``, ...), ``test_ground_truth.json`` and ``pqal_splits.json``;
* ``mt_bench/question.jsonl``, ``judge_prompts.jsonl`` and ``reference_answer/gpt-4.jsonl``
  in FastChat's layout (the reference file keeps the name FastChat's tools look for; its
  answers are ours, and say so in ``model_id``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable

from lisa_plugin.corpus import ITEMS, NAMES, PLACES

from eval_harness.tasks.utils import strip_calculator_notes

# Seeds of the disjoint pools: the test items are never seen in pre-training or fine-tuning.
TRAIN_SEED, TEST_SEED = 1, 2
PRETRAIN_SEED = TRAIN_SEED + 100
MAX_TRAIN_EXAMPLES = 5000  # the test split is kept clear of this many training problems

# --------------------------------------------------------------------------- GSM8K format


def _word_problem(rng: random.Random) -> dict[str, str]:
    name, other = rng.sample(NAMES, 2)
    item, place = rng.choice(ITEMS), rng.choice(PLACES)
    kind = rng.randrange(4)
    if kind == 0:
        a, b, c = rng.randint(5, 40), rng.randint(2, 30), rng.randint(1, 4)
        got = a + b
        final = got - c
        question = (f"{name} has {a} {item}. At the {place}, {other} gives {name} {b} more. "
                    f"Then {name} loses {c} of them. How many {item} does {name} have now?")
        steps = [f"After the gift {name} has {a} + {b} = <<{a}+{b}={got}>>{got} {item}.",
                 f"After losing {c}, {name} has {got} - {c} = <<{got}-{c}={final}>>{final} {item}."]
    elif kind == 1:
        boxes, per, extra = rng.randint(2, 9), rng.randint(3, 12), rng.randint(1, 9)
        packed = boxes * per
        final = packed + extra
        question = (f"{name} fills {boxes} boxes with {per} {item} each and keeps {extra} more in a bag. "
                    f"How many {item} does {name} have in all?")
        steps = [f"The boxes hold {boxes} * {per} = <<{boxes}*{per}={packed}>>{packed} {item}.",
                 f"With the bag that is {packed} + {extra} = <<{packed}+{extra}={final}>>{final} {item}."]
    elif kind == 2:
        friends, each = rng.randint(2, 6), rng.randint(2, 9)
        total = friends * each
        question = (f"{name} shares {total} {item} equally among {friends} friends at the {place}. "
                    f"How many {item} does each friend get?")
        final = each
        steps = [f"Each friend gets {total} / {friends} = <<{total}/{friends}={each}>>{each} {item}."]
    else:
        price, count, paid = rng.randint(2, 9), rng.randint(2, 8), 0
        cost = price * count
        paid = cost + rng.randint(1, 20)
        final = paid - cost
        question = (f"At the {place}, {item} cost {price} dollars each. {name} buys {count} and pays with "
                    f"{paid} dollars. How much change does {name} get?")
        steps = [f"The {item} cost {count} * {price} = <<{count}*{price}={cost}>>{cost} dollars.",
                 f"The change is {paid} - {cost} = <<{paid}-{cost}={final}>>{final} dollars."]
    return {"question": question, "answer": "\n".join(steps) + f"\n#### {final}"}


def word_problems(n: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    """``n`` problems, none of whose question is in ``exclude`` (the pools a model trains on)."""
    rng = random.Random(seed)
    out: list[dict[str, str]] = []
    while len(out) < n:
        problem = _word_problem(rng)
        if problem["question"] not in exclude:
            out.append(problem)
    return out


def alpaca_training_set(n: int, seed: int = TRAIN_SEED) -> list[dict[str, str]]:
    """Fine-tuning data: word problems from the training pool, as alpaca records."""
    return [{"instruction": p["question"], "input": "", "output": strip_calculator_notes(p["answer"])}
            for p in word_problems(n, seed)]


# --------------------------------------------------------------------------- PubMedQA format

TREATMENTS = ["daily walking", "a low-salt diet", "vitamin D tablets", "an extra hour of sleep", "group exercise",
              "a breathing programme", "cold water swimming", "a reading lamp at night", "green tea", "stretching"]
OUTCOMES = ["blood pressure", "fatigue", "recovery time", "joint pain", "sleep quality", "headache frequency",
            "resting heart rate", "reported stress"]
GROUPS = ["older adults", "nurses on night shifts", "office workers", "students", "patients after knee surgery",
          "runners", "new parents", "farm workers"]
FINDINGS = {
    "yes": ("{outcome} improved in {share}% of the {treated} treated participants and in {control_share}% of the "
            "{control} controls; the difference was significant.",
            "{treatment} improves {outcome} in {group}."),
    "no": ("{outcome} changed in the same way in both groups ({share}% and {control_share}%); no difference "
           "was found.",
           "{treatment} does not change {outcome} in {group}."),
    "maybe": ("{outcome} improved slightly more with treatment ({share}% vs {control_share}%), but the sample "
              "was small and the difference was not significant.",
              "{treatment} may help {outcome} in {group}, but larger studies are needed."),
}


def _study(rng: random.Random, label: str) -> dict:
    treatment, outcome, group = rng.choice(TREATMENTS), rng.choice(OUTCOMES), rng.choice(GROUPS)
    treated, control = rng.randint(20, 200), rng.randint(20, 200)
    share = rng.randint(40, 80)
    control_share = {"yes": share - rng.randint(15, 30), "no": share + rng.randint(-2, 2),
                     "maybe": share - rng.randint(3, 8)}[label]
    fields = dict(treatment=treatment, outcome=outcome, group=group, treated=treated, control=control,
                  share=share, control_share=control_share)
    result, conclusion = FINDINGS[label]
    return {
        "QUESTION": f"Does {treatment} change {outcome} in {group}?",
        "CONTEXTS": [
            f"{outcome.capitalize()} is a common concern among {group}, and {treatment} is often suggested.",
            f"We assigned {treated} {group} to {treatment} and {control} to usual care for twelve weeks.",
            result.format(**fields).capitalize(),
        ],
        "LABELS": ["BACKGROUND", "METHODS", "RESULTS"],
        "MESHES": [outcome.title(), group.title()],
        "YEAR": str(rng.randint(2001, 2024)),
        "reasoning_required_pred": label,
        "reasoning_free_pred": label,
        "final_decision": label,
        "LONG_ANSWER": conclusion.format(**fields).capitalize(),
    }


def studies(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    # yes/no/maybe in roughly the real set's proportions (about 55/34/11)
    return [_study(rng, rng.choices(("yes", "no", "maybe"), weights=(55, 34, 11))[0]) for _ in range(n)]


def study_text(study: dict) -> str:
    return f"{study['QUESTION']} {' '.join(study['CONTEXTS'])} {study['LONG_ANSWER']}"


# --------------------------------------------------------------------------- MT-Bench format

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


# --------------------------------------------------------------------------- files


def _write_jsonl(path: Path, records: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))


def write_benchmarks(data_dir: Path, *, gsm8k_test: int = 200, pubmedqa_test: int = 200) -> Path:
    """Write the three benchmarks in the ``compare --data-dir`` layout; return ``data_dir``."""
    data_dir = Path(data_dir)
    _write_jsonl(data_dir / "gsm8k" / "train.jsonl", word_problems(400, TRAIN_SEED))
    seen = frozenset(p["question"] for seed, n in ((TRAIN_SEED, MAX_TRAIN_EXAMPLES), (PRETRAIN_SEED, 2000))
                     for p in word_problems(n, seed))
    _write_jsonl(data_dir / "gsm8k" / "test.jsonl", word_problems(gsm8k_test, TEST_SEED, exclude=seen))
    # ids look like PMIDs but start at 90,000,000, far above any real one of this era
    pool = studies(pubmedqa_test, TEST_SEED) + studies(pubmedqa_test, TRAIN_SEED)
    ids = [str(90_000_000 + i) for i in range(len(pool))]
    test_ids, cv_ids = ids[:pubmedqa_test], ids[pubmedqa_test:]
    _write_json(data_dir / "pubmedqa" / "ori_pqal.json", dict(zip(ids, pool)))
    _write_json(data_dir / "pubmedqa" / "test_ground_truth.json", {i: pool[n]["final_decision"] for n, i in enumerate(test_ids)})
    _write_json(data_dir / "pubmedqa" / "pqal_splits.json",
                {"_description": "eval_harness demo split: generated studies, not PubMedQA's", "source": "eval_harness.demo.data",
                 "test": test_ids, "cv": cv_ids, "cv_folds": [cv_ids[k::10] for k in range(10)]})
    questions, references = mt_bench_records()
    _write_jsonl(data_dir / "mt_bench" / "question.jsonl", questions)
    _write_jsonl(data_dir / "mt_bench" / "judge_prompts.jsonl", judge_prompts())
    _write_jsonl(data_dir / "mt_bench" / "reference_answer" / "gpt-4.jsonl", references)
    return data_dir


def pretraining_text(n: int = 2000, seed: int = PRETRAIN_SEED) -> list[str]:
    """General sentences plus training-pool word problems and studies (never the test pools)."""
    from lisa_plugin.corpus import paragraphs

    problems = [f"Question: {p['question']}\nAnswer: {strip_calculator_notes(p['answer'])}"
                for p in word_problems(n, seed)]
    return paragraphs(n, seed=seed) + problems + [study_text(s) for s in studies(n // 2, seed)]
