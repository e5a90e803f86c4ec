"""GSM8K (Cobbe et al., 2021, https://arxiv.org/abs/2110.14168): grade-school maths, 5-shot.

By default scored by lm-eval's stock ``gsm8k`` task itself (its YAML is included unchanged: prompts,
stop strings, 256 new tokens, strict and flexible filters), so the numbers are lm-eval's. The
variant ``clean`` (``eval_harness/tasks/gsm8k_clean.yaml``) is opted into with
``--variant gsm8k=clean``. Data: ``--data-dir DIR`` reads ``DIR/gsm8k/{train,test}.jsonl``
(openai/grade-school-math's files); online, the hub's ``openai/gsm8k``. The demo data are word
problems made from templates with a seeded generator: the format is GSM8K's, no item is.
"""

from __future__ import annotations

import random
from pathlib import Path

from lisa_formats.atomic import write_jsonl_atomic

from eval_harness.benchmarks.registry import (DEMO_TEST_SEED, DEMO_TRAIN_SEED, STOCK, Benchmark, DataError,
                                              Headline, Prepared, Variant, register_benchmark)
from eval_harness.tasks import TASK_DIR, stock_task_yaml

TRAIN_SEED, TEST_SEED = DEMO_TRAIN_SEED, DEMO_TEST_SEED
PRETRAIN_SEED = TRAIN_SEED + 100
TRAIN_POOL = 5000  # the demo's test split is kept clear of this many training problems
PRETRAIN_POOL = 2000
DEMO_TRAIN_ITEMS = 400  # the few-shot exemplars' pool


def data_files(data_dir: Path) -> dict[str, str]:
    files = {split: Path(data_dir) / "gsm8k" / f"{split}.jsonl" for split in ("train", "test")}
    for path in files.values():
        if not path.exists():
            raise DataError(f"{path}: missing (expected openai/grade-school-math's {path.name})")
    return {split: str(path.resolve()) for split, path in files.items()}


CLEAN = Variant("clean", "exemplars without calculator notes (<<48/2=24>>), which base models copy into their "
                "answers; also stops at <|eot_id|>, allows 1,024 new tokens (stock: 256) and reads the last number "
                "even when it ends in '...' (stock scores '18...' as wrong): what this harness scored before")


def prepare(work_dir: Path, data_dir: Path | None, variant: str = STOCK) -> Prepared:
    task_file = stock_task_yaml("gsm8k/gsm8k.yaml") if variant == STOCK else TASK_DIR / f"gsm8k_{variant}.yaml"
    overrides = {"include": str(task_file), "task": "harness_gsm8k"}
    if data_dir is None:
        return Prepared(overrides, "hub:openai/gsm8k/main")
    files = data_files(data_dir)
    overrides.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": files})
    return Prepared(overrides, f"local:{Path(data_dir).resolve() / 'gsm8k'}", tuple(Path(f) for f in files.values()))


# --------------------------------------------------------------------------- demo data


def _gift(rng: random.Random, name: str, other: str, item: str, place: str) -> tuple[str, list[str], int]:
    a, b, c = rng.randint(5, 40), rng.randint(2, 30), rng.randint(1, 4)
    got, final = a + b, a + b - c
    question = (f"{name} has {a} {item}. At the {place}, {other} gives {name} {b} more. "
                f"Then {name} loses {c} of them. How many {item} does {name} have now?")
    return question, [f"After the gift {name} has {a} + {b} = <<{a}+{b}={got}>>{got} {item}.",
                      f"After losing {c}, {name} has {got} - {c} = <<{got}-{c}={final}>>{final} {item}."], final


def _boxes(rng: random.Random, name: str, other: str, item: str, place: str) -> tuple[str, list[str], int]:
    boxes, per, extra = rng.randint(2, 9), rng.randint(3, 12), rng.randint(1, 9)
    packed = boxes * per
    final = packed + extra
    question = (f"{name} fills {boxes} boxes with {per} {item} each and keeps {extra} more in a bag. "
                f"How many {item} does {name} have in all?")
    return question, [f"The boxes hold {boxes} * {per} = <<{boxes}*{per}={packed}>>{packed} {item}.",
                      f"With the bag that is {packed} + {extra} = <<{packed}+{extra}={final}>>{final} {item}."], final


def _share(rng: random.Random, name: str, other: str, item: str, place: str) -> tuple[str, list[str], int]:
    friends, each = rng.randint(2, 6), rng.randint(2, 9)
    total = friends * each
    question = (f"{name} shares {total} {item} equally among {friends} friends at the {place}. "
                f"How many {item} does each friend get?")
    return question, [f"Each friend gets {total} / {friends} = <<{total}/{friends}={each}>>{each} {item}."], each


def _change(rng: random.Random, name: str, other: str, item: str, place: str) -> tuple[str, list[str], int]:
    price, count = rng.randint(2, 9), rng.randint(2, 8)
    cost = price * count
    paid = cost + rng.randint(1, 20)
    final = paid - cost
    question = (f"At the {place}, {item} cost {price} dollars each. {name} buys {count} and pays with "
                f"{paid} dollars. How much change does {name} get?")
    return question, [f"The {item} cost {count} * {price} = <<{count}*{price}={cost}>>{cost} dollars.",
                      f"The change is {paid} - {cost} = <<{paid}-{cost}={final}>>{final} dollars."], final


_KINDS = (_gift, _boxes, _share, _change)


def _word_problem(rng: random.Random) -> dict[str, str]:
    from lisa_plugin.tools.corpus import ITEMS, NAMES, PLACES  # word lists only; imported when demo data is made

    name, other = rng.sample(NAMES, 2)
    item, place = rng.choice(ITEMS), rng.choice(PLACES)
    question, steps, final = _KINDS[rng.randrange(len(_KINDS))](rng, name, other, item, place)
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


def write_demo_data(data_dir: Path, test_items: int) -> None:
    """``gsm8k/{train,test}.jsonl``; no test question is in the demo's training or pre-training pools."""
    folder = Path(data_dir) / "gsm8k"
    write_jsonl_atomic(folder / "train.jsonl", word_problems(DEMO_TRAIN_ITEMS, TRAIN_SEED))
    seen = frozenset(p["question"] for seed, n in ((TRAIN_SEED, TRAIN_POOL), (PRETRAIN_SEED, PRETRAIN_POOL))
                     for p in word_problems(n, seed))
    write_jsonl_atomic(folder / "test.jsonl", word_problems(test_items, TEST_SEED, exclude=seen))


GSM8K = register_benchmark(Benchmark(
    name="gsm8k",
    lm_eval_task="harness_gsm8k",
    headlines=(Headline("GSM8K strict %", "exact_match,strict-match"),
               Headline("GSM8K flex %", "exact_match,flexible-extract")),
    fewshot=5,
    prepare=prepare,
    demo_data=write_demo_data,
    description="grade-school maths word problems, exact match of the final number",
    variants=(CLEAN,),
))
