"""MT-Bench for one model: answer, then judge (when a judge is given), then summarise.

Layout under ``out_dir`` mirrors FastChat's ``data/mt_bench`` so its own tools can read it:
``model_answer/{model_id}.jsonl`` and ``model_judgment/{judge}_single.jsonl``. Both files are
appended to as results arrive, and a rerun only does what is missing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lisa_formats.atomic import write_json_atomic
from lisa_formats.jsonl import read_jsonl

from eval_harness.discovery import weights_fingerprint
from eval_harness.engines.backend import HF, Endpoint
from eval_harness.judges import Judge, JudgeSettings
from eval_harness.mt_bench import data
from eval_harness.mt_bench.answer import generate_answers, load_tokenizer, resolve_template
from eval_harness.mt_bench.judge import Grading, judge_answers, judge_endpoint, open_judge
from eval_harness.mt_bench.pairwise import judge_pairs, summarise_pairs
from eval_harness.mt_bench.show import load_judgments, summarise

logger = logging.getLogger(__name__)


def answer_path(out_dir: Path, model_id: str) -> Path:
    return Path(out_dir) / "model_answer" / f"{model_id}.jsonl"


def judgment_path(out_dir: Path, judge_model: str, mode: str = "single") -> Path:
    # judge names like "org/model" would otherwise become folders
    return Path(out_dir) / "model_judgment" / f"{judge_model.replace('/', '_')}_{mode}.jsonl"


def _check_answer_settings(answer_file: Path, settings: dict) -> None:
    """Refuse to mix answers made with other settings into one file (resuming must not change the model).

    The settings sit beside the answers in ``{model_id}.settings.json``; FastChat reads only ``*.jsonl``.
    """
    sidecar = answer_file.with_suffix(".settings.json")
    if sidecar.exists():
        stored = json.loads(sidecar.read_text())
        # files from before backends existed were generated with hf
        changed = {k: (stored.get(k, HF if k == "backend" else None), v) for k, v in settings.items()
                   if stored.get(k, HF if k == "backend" else None) != v}
        if changed:
            details = "; ".join(f"{k}: stored {old!r}, now {new!r}" for k, (old, new) in changed.items())
            raise ValueError(
                f"{answer_file}: its answers were generated with other settings ({details}); "
                "use another model_id or out_dir, or delete the file and its .settings.json to regenerate"
            )
        return
    write_json_atomic(sidecar, settings)


def load_answers(answer_file: Path) -> dict[int, list[str]]:
    """question_id -> the answer's two turns (the first record of each question wins)."""
    answers: dict[int, list[str]] = {}
    for record in read_jsonl(answer_file):
        turns = record["choices"][0]["turns"]
        if len(turns) != 2:
            raise ValueError(
                f"{answer_file}: question {record['question_id']} has {len(turns)} answer turns; expected 2"
            )
        answers.setdefault(int(record["question_id"]), turns)
    return answers


def run_mt_bench(
    model_id: str,
    model_path: str | Path,
    adapter_path: str | Path | None = None,
    *,
    out_dir: Path,
    mt_bench_dir: Path | None = None,
    judge: JudgeSettings | Judge | None = None,
    limit: int | None = None,
    template: str | None = None,
    max_new_tokens: int = 1024,
    device: str | None = None,
    dtype: str = "float32",
    batch_size: int | str | None = 8,
    seed: int = 0,
    pairwise_baseline: Path | None = None,
    judge_repeats: int | None = None,
    judge_concurrency: int | None = None,
    rejudge_failed: bool | None = None, endpoint: Endpoint | None = None, concurrency: int = 8,
) -> dict:
    """Generate (or resume) answers, judge them if ``judge`` is given, and return the summary.

    ``judge``: settings of the OpenAI-compatible judge (repeats and concurrency included), or
    any :class:`~eval_harness.judges.Judge` (then ``judge_repeats``/``judge_concurrency``, default
    1 and 4). Without a judge the summary says ``"judged": False`` and every score is None.
    With one, ``"complete"`` says whether every judgment exists: requests the judge refused or
    answered unusably leave ``"missing_judgments"`` > 0 (of ``"expected_judgments"``), and a
    re-run asks for exactly those again; ``"judge"`` names the model, the endpoint and the model
    names the server replied with. Items the judge never answered after its retries are stored
    as errors: ``"judge_errors"`` counts them (never averaged, not missing); ``rejudge_failed``
    (default: the settings' ``rejudge_failed``, else False) asks those and parse failures again.
    ``"overall"`` is FastChat's (mean of all valid ratings); ``"overall_turn_mean"`` the mean of turn means.
    ``pairwise_baseline``: a baseline's FastChat model_answer JSONL; with a judge, each answer is
    also judged against it in both orders (summary key ``"pairwise"``). ``endpoint``: answer through that server.
    """
    if pairwise_baseline is not None and judge is None:
        raise ValueError(f"pairwise_baseline {pairwise_baseline}: pairwise grading needs a judge; got judge=None")
    out_dir = Path(out_dir)
    bench = data.load(mt_bench_dir)
    questions = data.select(bench.questions, limit)
    answer_file, chat = _answer(questions, out_dir, model_id, str(model_path), adapter_path, template=template,
                                max_new_tokens=max_new_tokens, device=device, dtype=dtype, batch_size=batch_size, seed=seed,
                                endpoint=endpoint, concurrency=concurrency)
    answers = load_answers(answer_file)
    summary = {
        "judged": False, "turn1": None, "turn2": None, "overall": None, "overall_turn_mean": None, "n_questions": len(questions),
        "parse_failures": 0, "judge_errors": 0, "judge_refused": 0, "per_category": {}, "per_question": {},
        "template": chat.name, "template_reason": chat.reason, "answers_file": str(answer_file),
        "judgment_file": None, "judge_model": None, "judge_spread": None, "pairwise": None,
        "complete": judge is None, "missing_judgments": 0, "expected_judgments": 0, "judge": None,
        "subset": data.subset(bench.questions, limit).to_json(),
    }
    if judge is not None:
        grading = open_judge(judge, judge_repeats, judge_concurrency, rejudge_failed)
        try:
            summary.update(judge_all(bench, questions, answers, out_dir, model_id, grading, pairwise_baseline))
        finally:
            grading.judge.close()
    write_json_atomic(out_dir / f"summary_{model_id}.json", summary)
    return summary


def _answer(questions, out_dir: Path, model_id: str, model_path: str, adapter_path, **options):
    """Generate the missing answers; return the answer file and the chat format used."""
    adapter = str(adapter_path) if adapter_path else None
    tokenizer = load_tokenizer(model_path, adapter)
    chat = resolve_template(options.pop("template"), tokenizer, model_path)
    logger.info("MT-Bench %s: template %s (%s)", model_id, chat.name, chat.reason)
    answer_file = answer_path(out_dir, model_id)
    _check_answer_settings(
        answer_file,
        {"model_path": model_path, "adapter_path": adapter, "template": chat.name,
         "weights": weights_fingerprint(adapter or model_path), "max_new_tokens": options["max_new_tokens"],
         "dtype": options["dtype"], "seed": options["seed"],
         "backend": options["endpoint"].identity() if options["endpoint"] else HF},
    )
    generate_answers(questions, answer_file, model_id=model_id, model_path=model_path, adapter_path=adapter,
                     tokenizer=tokenizer, chat=chat, **options)
    return answer_file, chat


def judge_all(bench, questions, answers, out_dir: Path, model_id: str, grading: Grading,
               pairwise_baseline: Path | None) -> dict:
    """Single grading, then pairwise grading when a baseline is given; whether all of it exists, and by whom."""
    summary = _judge(bench, questions, answers, out_dir, model_id, grading)
    if pairwise_baseline is not None:
        summary["pairwise"] = _pairwise(bench, questions, answers, Path(pairwise_baseline), out_dir, model_id, grading)
    summary["complete"] = summary["missing_judgments"] == 0 and not (summary.get("pairwise") or {}).get("missing")
    served = getattr(grading.judge, "served_models", None)
    summary["judge"] = {"model": grading.judge.model, "endpoint": judge_endpoint(grading.judge),
                        "served_by": served() if callable(served) else None}
    constraint = (grading.judge.identity() or {}).get("verdict_regex")
    if constraint is not None:
        summary["judge"]["verdict_regex"] = constraint
    return summary


def _judge(bench, questions, answers, out_dir: Path, model_id: str, grading: Grading) -> dict:
    judge_model, endpoint = grading.judge.model, judge_endpoint(grading.judge)
    judgment_file = judgment_path(out_dir, judge_model)
    counts = judge_answers(bench, questions, answers, judgment_file, model_id=model_id, grading=grading)
    judgments = load_judgments(judgment_file, model_id, judge_model, {q.question_id for q in questions}, endpoint,
                               keys=counts["keys"])
    expected = 2 * len(questions) * grading.repeats
    return {**summarise(judgments, questions, grading.repeats), "judged": True, "judge_refused": counts["refused"],
            "judgment_file": str(judgment_file), "judge_model": judge_model, "judge_endpoint": endpoint,
            "expected_judgments": expected, "missing_judgments": expected - len(judgments)}


def _pairwise(bench, questions, answers, baseline_file: Path, out_dir: Path, model_id: str, grading: Grading) -> dict:
    records = read_jsonl(baseline_file)
    if not records:
        raise FileNotFoundError(f"pairwise_baseline {baseline_file}: no answers; expected a FastChat model_answer JSONL")
    baseline_id = records[0]["model_id"]
    if baseline_id == model_id:
        raise ValueError(f"pairwise_baseline {baseline_file}: model_id {baseline_id!r} is the model being judged")
    pair_file = judgment_path(out_dir, grading.judge.model, "pair")
    baseline_answers = load_answers(baseline_file)
    counts = judge_pairs(
        bench, questions, answers, baseline_answers, pair_file, model_id=model_id, baseline_id=baseline_id, grading=grading
    )
    result = summarise_pairs(pair_file, model_id, baseline_id, grading.judge.model, {q.question_id for q in questions},
                             judge_endpoint(grading.judge))
    return {**result, "judge_refused": counts["refused"]}
