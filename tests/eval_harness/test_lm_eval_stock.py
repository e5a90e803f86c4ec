"""Our GSM8K and PubMedQA against lm-eval's stock tasks, item by item, on the same local data.

The stock side is built the way lm-eval builds it, from its own YAML (``load_yaml_config`` on the
installed ``lm_eval/tasks/.../*.yaml``, then ``ConfigurableTask``), with only the dataset pointed at
local files; ours goes through ``prepare_tasks`` and the report's ``TaskManager`` as ``compare`` does.
For every test item both must render the same request (prompt and generation settings), and a
scripted model must get the same filtered answers and scores from both.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from eval_harness.lm_eval_runner import EvalOptions, prepare_tasks
from eval_harness.tasks import stock_task_yaml

FEWSHOT_SEED = 1234  # simple_evaluate's fewshot_random_seed default


@pytest.fixture(scope="module", autouse=True)
def compiled_templates_once():
    """lm-eval compiles a Jinja template per document and field (most of the time rendering takes);
    both sides share that function, so compiling each template once changes no prompt, only the time."""
    from functools import lru_cache

    from lm_eval import utils

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(utils.env, "from_string", lru_cache(maxsize=None)(utils.env.from_string))
        yield


def stock_task(relative: str, data_files: dict[str, str]):
    """lm-eval's stock task from its own YAML, reading ``data_files`` instead of the hub."""
    from lm_eval import utils
    from lm_eval.api.task import ConfigurableTask

    config = utils.load_yaml_config(str(stock_task_yaml(relative)), mode="full")
    config = {k: v for k, v in config.items() if k != "tag"}
    config.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": data_files})
    return ConfigurableTask(config=config)


def our_task(out: Path, data_dir: Path, name: str, **options):
    """Our task as ``compare`` prepares it; the manager indexes only the report's YAMLs (lm-eval's own
    index adds seconds and nothing these tasks use: they include stock files by path)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    (task,), task_dir = prepare_tasks([name], out, data_dir, {}, EvalOptions(**options))
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    return task, get_task_dict([task.lm_eval_name], manager)[task.lm_eval_name]


def requests(task, num_fewshot: int | None = None) -> dict[int, list]:
    """Every item's requests as ``simple_evaluate`` builds them (its few-shot seed, its 0-shot default)."""
    if num_fewshot is not None:
        task.set_config("num_fewshot", num_fewshot)
    elif task.get_config("num_fewshot") is None:
        task.set_config("num_fewshot", 0)
    task.set_fewshot_seed(FEWSHOT_SEED)
    task.build_all_requests(rank=0, world_size=1)
    by_doc: dict[int, list] = {}
    for instance in task.instances:
        by_doc.setdefault(instance.doc_id, []).append(instance)
    return by_doc


def score(task, by_doc: dict[int, list], respond) -> dict[int, dict]:
    """What lm-eval's evaluator does with responses: filters, then ``process_results`` per filter."""
    for instances in by_doc.values():
        for instance in instances:
            instance.resps = [respond(instance)]
            instance.filtered_resps = {}
    task.apply_filters()
    out = {}
    for doc_id, instances in by_doc.items():
        out[doc_id] = {
            key: {"filtered": [i.filtered_resps[key] for i in instances],
                  "metrics": task.process_results(instances[0].doc, [i.filtered_resps[key] for i in instances])}
            for key in instances[0].filtered_resps
        }
    return out


def agreement(ours: dict[int, dict], stock: dict[int, dict]) -> Counter:
    counts: Counter = Counter()
    for doc_id, per_filter in stock.items():
        for key, expected in per_filter.items():
            counts[f"{key} filtered"] += ours[doc_id][key]["filtered"] == expected["filtered"]
            counts[f"{key} score"] += ours[doc_id][key]["metrics"] == expected["metrics"]
    return counts


# --------------------------------------------------------------------------- GSM8K


def final(doc) -> str:
    return re.search(r"#### (\S+)$", doc["answer"]).group(1)


# Scripted answers: right and wrong ones in the formats models produce, edge cases included.
GSM8K_ANSWERS = {
    "reference": lambda doc: " " + doc["answer"],
    "sentence": lambda doc: f" So she makes ${final(doc)} in all.",
    "trailing dots": lambda doc: f" The answer is {final(doc).replace(',', '')}...",
    "decimal": lambda doc: f" #### {final(doc).replace(',', '')}.00",
    "wrong": lambda doc: f" #### {int(final(doc).replace(',', '')) + 1}",
    "no number": lambda doc: " I do not know.",
    "rambling": lambda doc: f" 3 + 4 = 7, and 12,000 / 4 = 3,000. #### {final(doc)}\n\nQuestion: 5 apples",
}


@pytest.fixture(scope="module")
def gsm8k_pair(shared_data, tmp_path_factory):
    """(stock task, its requests), (our task, its requests), our LmEvalTask."""
    files = {split: str(shared_data / "gsm8k" / f"{split}.jsonl") for split in ("train", "test")}
    stock = stock_task("gsm8k/gsm8k.yaml", files)
    info, ours = our_task(tmp_path_factory.mktemp("gsm8k"), shared_data, "gsm8k")
    return (stock, requests(stock)), (ours, requests(ours)), info


def test_gsm8k_prompts_and_settings_are_stock_for_every_item(gsm8k_pair):
    (_, theirs), (_, mine), info = gsm8k_pair
    assert len(theirs) == len(mine) == 1319
    same_prompt = sum(mine[i][0].args[0] == theirs[i][0].args[0] for i in theirs)
    same_settings = sum(mine[i][0].args[1] == theirs[i][0].args[1] for i in theirs)
    assert (same_prompt, same_settings) == (1319, 1319)
    assert theirs[0][0].args[0].count("Question:") == 6 and "<<" in theirs[0][0].args[0]  # 5 stock exemplars
    assert mine[0][0].args[1]["until"] == ["Question:", "</s>", "<|im_end|>"]
    assert "max_gen_toks" not in mine[0][0].args[1]  # lm-eval's default budget, 256
    assert info.num_fewshot == 5 and info.variant == "stock"


@pytest.mark.parametrize("style", list(GSM8K_ANSWERS))
def test_gsm8k_scripted_answers_score_the_same(gsm8k_pair, style):
    (stock, stock_requests), (ours, our_requests), _ = gsm8k_pair
    respond = lambda instance: GSM8K_ANSWERS[style](instance.doc)  # noqa: E731
    theirs, mine = score(stock, stock_requests, respond), score(ours, our_requests, respond)
    counts = agreement(mine, theirs)
    assert counts == Counter({f"{f} {what}": 1319 for f in ("strict-match", "flexible-extract")
                              for what in ("filtered", "score")})


def test_the_clean_variant_differs_where_documented(shared_data, tmp_path):
    task, clean = our_task(tmp_path, shared_data, "gsm8k", variants={"gsm8k": "clean"})
    by_doc = requests(clean)
    prompt, settings = by_doc[0][0].args
    assert "<<" not in prompt and settings["max_gen_toks"] == 1024 and "<|eot_id|>" in settings["until"]
    scores = score(clean, by_doc, lambda instance: GSM8K_ANSWERS["trailing dots"](instance.doc))
    assert all(s["flexible-extract"]["metrics"]["exact_match"] == 1.0 for s in scores.values())
    assert task.variant == "clean"


# --------------------------------------------------------------------------- PubMedQA


def bigbio_fold0(data_dir: Path, out: Path) -> dict[str, str]:
    """bigbio's pubmed_qa_labeled_fold0_source from the upstream files, written independently of ours:
    fold 0's dev is cv_folds[0], its train the other nine folds in order, test the official 500."""
    src = data_dir / "pubmedqa"
    pool = json.loads((src / "ori_pqal.json").read_text())
    folds = json.loads((src / "pqal_splits.json").read_text())["cv_folds"]
    truth = json.loads((src / "test_ground_truth.json").read_text())
    ids = {"train": [p for fold in folds[1:] for p in fold], "validation": folds[0], "test": list(truth)}
    files = {}
    for split, pmids in ids.items():
        files[split] = str(out / f"{split}.jsonl")
        Path(files[split]).write_text("".join(json.dumps(pool[p]) + "\n" for p in pmids))
    return files


@pytest.fixture(scope="module")
def pubmedqa_pair(shared_data, tmp_path_factory):
    stock = stock_task("pubmedqa/pubmedqa.yaml", bigbio_fold0(shared_data, tmp_path_factory.mktemp("bigbio")))
    ours, task = our_task(tmp_path_factory.mktemp("pubmedqa"), shared_data, "pubmedqa")
    return stock, ours, task


def test_pubmedqa_documents_prompts_and_exemplar_pool_are_stock(pubmedqa_pair):
    stock, info, ours = pubmedqa_pair
    for split in ("test", "training", "validation"):
        assert [dict(d) for d in getattr(ours, f"{split}_docs")()] == [dict(d) for d in getattr(stock, f"{split}_docs")()]
    for shots in (None, 3):  # stock's default (0-shot), and exemplars drawn from the same fold-0 pool
        theirs, mine = requests(stock, shots), requests(ours, shots)
        assert len(theirs) == len(mine) == 500
        assert sum([r.args for r in mine[i]] == [r.args for r in theirs[i]] for i in theirs) == 500
    assert info.num_fewshot == 0 and info.stratify_by == "final_decision"


def test_pubmedqa_scripted_answers_score_the_same(pubmedqa_pair):
    stock, _, ours = pubmedqa_pair

    def respond(instance):  # prefers the right label on even items, "maybe" on odd ones
        label = instance.doc["final_decision"] if instance.doc_id % 2 == 0 else "maybe"
        return (0.0, True) if instance.args[1].strip() == label else (-3.0 - len(instance.args[1]), False)

    theirs, mine = score(stock, requests(stock), respond), score(ours, requests(ours), respond)
    assert agreement(mine, theirs) == Counter({"none filtered": 500, "none score": 500})
    accuracy = sum(s["none"]["metrics"]["acc"] for s in mine.values()) / 500
    assert 0.5 < accuracy < 0.6


def test_pubmedqa_labelled_variant_is_five_shot_with_section_labels(shared_data, tmp_path):
    task, labelled = our_task(tmp_path, shared_data, "pubmedqa", variants={"pubmedqa": "labelled"})
    assert task.num_fewshot == 5
    prompt = requests(labelled, task.num_fewshot)[0][0].args[0]
    assert prompt.count("Abstract:\n") == 6 and re.search(r"\n(Background|Objective|Methods|Results): ", prompt)
