"""Gather everything the report shows from what ``compare`` stored; nothing is evaluated here.

Sources, all under the results dir (``compare --output``) unless said otherwise:

* ``results.json``: the runs (method and settings, overrides applied; training facts), the
  settings ``compare`` ran with, problems;
* ``results/<run>/<task>.json``: one :class:`TaskResult` per run and task;
* ``mt_bench/model_judgment/*.jsonl`` and ``model_answer/<run>.jsonl`` (FastChat formats), with
  the category of each question joined from MT-Bench's ``question.jsonl``;
* ``samples/<run>/<task>.jsonl``: lm-eval's per-sample logs, for paired tests;
* in each run dir, when it still exists: ``trainer_state.json``/``debug.log`` (loss, time, memory),
  ``lisa_history.json`` (which layers LISA trained) and ``norms.json`` (``lisa-plugin norms``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lisa_formats.jsonl import read_jsonl
from lisa_formats.norms import PROFILE_FILE as NORMS_FILE
from lisa_formats.norms import NormsProfile
from lisa_formats.suggest import unknown

from eval_harness.benchmarks import MT_BENCH
from eval_harness.discovery import (
    RunError,
    TrainingFacts,
    read_axolotl_config,
    read_lisa_history,
    read_training_facts,
    short_settings,
)
from eval_harness.judges.openai_compat import OPENAI_BASE_URL, redact_key
from eval_harness.mt_bench.judge import PARSE_FAILURE
from eval_harness.report import stats
from eval_harness.report.record import RESULTS_FILE
from eval_harness.report.summary import HeadlineColumn, headline_columns
from eval_harness.results import ResultStore, TaskResult

MT_BENCH_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
EXAMPLES_PER_RUN = 3  # lowest-rated answers shown per run, besides every parse failure
CONSTANT_MIN_ITEMS = 5  # fewer items than this giving one answer is not worth a note


class ReportInputError(ValueError):
    """Stored results cannot be read; the message names the file and what was expected."""


@dataclass
class JudgedAnswer:
    """One graded turn, as shown in the per-run details (all of it untrusted text)."""

    question_id: int
    category: str
    turn: int
    score: float
    question: str
    answer: str
    judgment: str


NOT_JUDGED = "not judged"
INCOMPLETE = "incomplete"  # mt_bench_status starts with it: some judgments are missing, no score is shown


def judge_label(result: TaskResult) -> str | None:
    """Who judged an MT-Bench result: the model, the endpoint, and what the server said it served."""
    details = result.details or {}
    judge = details.get("judge") or {}
    model = judge.get("model") or details.get("judge_model")
    if not model:
        return None
    asked = ((result.settings or {}).get("judge") or {}).get("base_url")
    endpoint = judge.get("endpoint") or details.get("judge_endpoint") or asked or OPENAI_BASE_URL
    served = [s for s in judge.get("served_by") or [] if s != model]
    label = f"{model} at {endpoint}" + (f" (served as {', '.join(served)})" if served else "")
    if judge.get("verdict_regex"):
        label += (" (verdict format enforced by the server, --judge-constrain-verdict: FastChat only asks for it "
                  "in the prompt)")
    return label


def mt_bench_status(result: TaskResult) -> str:
    """"judged", "not judged", or "incomplete: K of N judgments missing"."""
    details = result.details or {}
    if not details.get("judged"):
        return NOT_JUDGED
    if details.get("complete") is False:
        missing = f"{details.get('missing_judgments')} of {details.get('expected_judgments')} judgments missing"
        pairs = (details.get("pairwise") or {}).get("missing")
        return f"{INCOMPLETE}: {missing}" + (f", {pairs} pairwise verdicts missing" if pairs else "")
    return "judged"


@dataclass
class MtBenchRun:
    turn1: float | None
    turn2: float | None
    overall: float | None
    ci: stats.Interval
    per_category: dict[str, float | None]
    question_scores: dict[int, tuple[float, float]]  # question id -> turn means over repeats (NaN: none valid)
    parse_failures: int
    n_judgments: int
    judge_model: str | None
    judge_spread: float | None  # stdev of the overall score across --judge-repeats
    repeats: int
    examples: list[JudgedAnswer] = field(default_factory=list)
    judge_errors: int = 0  # items the judge still failed after its retries (FastChat's $ERROR$): never averaged
    judge: str | None = None  # who judged: "model at endpoint" (and the name the server replied with)

    def question_means(self) -> dict[int, float]:
        """Per-question score for paired tests: the mean of the turns that were rated."""
        out = {}
        for qid, turns in self.question_scores.items():
            rated = [t for t in turns if not math.isnan(t)]
            if rated:
                out[qid] = sum(rated) / len(rated)
        return out


@dataclass
class Accuracy:
    title: str  # column title, e.g. "GSM8K strict %"
    task: str
    metric: str  # lm-eval's "metric,filter"
    value: float | None
    stderr: float | None
    n: int | None
    per_sample: dict[Any, float]  # item -> score from lm-eval's per-sample log: doc id, or (subtask, doc id) in a group
    num_fewshot: Any = None
    lm_eval_version: str | None = None
    answers: dict[Any, str] = field(default_factory=dict)  # item -> the model's answer (the choice it ranked first)

    @property
    def constant_answer(self) -> str | None:
        """The one answer the model gave to every item, when it gave the same to all of them."""
        distinct = set(self.answers.values())
        return distinct.pop() if len(self.answers) >= CONSTANT_MIN_ITEMS and len(distinct) == 1 else None


@dataclass
class RunEntry:
    name: str
    method: str
    settings: dict[str, Any]
    path: str | None
    training: TrainingFacts
    mt_bench: MtBenchRun | None = None
    mt_bench_status: str | None = None  # "judged", "not judged" (answers only), or None (not run)
    accuracy: dict[str, Accuracy] = field(default_factory=dict)  # by column title
    lisa_activation: list[int] | None = None  # intervals each decoder layer was trainable
    norms: list[dict[str, Any]] | None = None  # lisa_norms/1 rows: layer, kind, update_norm, ...
    problems: list[str] = field(default_factory=list)

    @property
    def short_settings(self) -> str:
        return short_settings(self.method, self.settings)


@dataclass
class ReportData:
    results_dir: Path
    compare: dict[str, Any]  # results.json as compare wrote it ({} when absent)
    runs: list[RunEntry]
    columns: list[HeadlineColumn]  # the lm-eval benchmarks' headline numbers
    baseline: str | None  # the run gains are relative to (the LoRA row)
    comparisons: list[stats.PairedTest]
    questions_file: str | None
    problems: list[str]
    resamples: int
    seed: int

    def run(self, name: str) -> RunEntry | None:
        return next((r for r in self.runs if r.name == name), None)

    @property
    def origin(self) -> str | None:
        """Who ran compare: "demo" for ``lisa-demo-compare``, None for a user's own runs."""
        return (self.compare.get("settings") or {}).get("origin")


# --------------------------------------------------------------------------- reading


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportInputError(f"{path}: not valid JSON ({exc}); expected {what}") from None


def _find(stored: str | None, fallback: Path) -> Path | None:
    """A file named in a stored result (maybe relative to where compare ran), else its usual place."""
    for candidate in (Path(stored) if stored else None, fallback):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def question_categories(mt_bench_dir: Path | None) -> tuple[dict[int, tuple[str, list[str]]], str | None]:
    """question id -> (category, turns) from MT-Bench's question.jsonl ({} when not found)."""
    if mt_bench_dir is None:
        return {}, None
    path = Path(mt_bench_dir) / "question.jsonl"
    if not path.is_file():
        return {}, None
    out = {}
    for record in read_jsonl(path):
        try:
            out[int(record["question_id"])] = (str(record["category"]), list(record.get("turns") or []))
        except (KeyError, TypeError, ValueError):
            raise ReportInputError(f"{path}: a line lacks question_id/category; expected MT-Bench's question.jsonl") from None
    return out, str(path)


def _mt_bench_dir(explicit: Path | None, results: list[TaskResult]) -> Path | None:
    if explicit is not None:
        if not (Path(explicit) / "question.jsonl").is_file():
            raise ReportInputError(f"--mt-bench-dir {explicit}: no question.jsonl there")
        return Path(explicit)
    for result in results:
        stored = result.settings.get("mt_bench_dir")
        if stored and (Path(stored) / "question.jsonl").is_file():
            return Path(stored)
    from eval_harness.mt_bench.data import cache_dir

    return cache_dir() if (cache_dir() / "question.jsonl").is_file() else None


def _mt_bench(result: TaskResult, results_dir: Path, questions: dict[int, tuple[str, list[str]]],
              resamples: int, seed: int) -> MtBenchRun | None:
    details = result.details or {}
    if not details.get("judged") or details.get("complete") is False:
        return None  # a partial result has no score: its status says what is missing
    judge_model = details.get("judge_model")
    stored_questions = details.get("per_question") or {}
    category = {int(q): v.get("category") for q, v in stored_questions.items()}
    category.update({q: c for q, (c, _) in questions.items()})
    judgment_file = _find(result.files.get("judgment_file") or details.get("judgment_file"),
                          results_dir / MT_BENCH / "model_judgment" / f"{str(judge_model).replace('/', '_')}_single.jsonl")
    scores: dict[int, dict[int, list[float]]] = {}
    records: list[dict] = []
    parse_failures = int(details.get("parse_failures") or 0)
    judge_errors = int(details.get("judge_errors") or 0)
    if judgment_file is not None:
        from eval_harness.mt_bench.show import load_judgments

        wanted = {int(q) for q in stored_questions} or set(questions)
        records = load_judgments(judgment_file, result.run, judge_model, wanted, details.get("judge_endpoint", False))
        parse_failures = sum(1 for r in records if r["score"] == PARSE_FAILURE and "error" not in r)
        judge_errors = sum(1 for r in records if "error" in r)
        for r in records:
            if r["score"] != PARSE_FAILURE:
                scores.setdefault(int(r["question_id"]), {}).setdefault(int(r["turn"]), []).append(float(r["score"]))
        question_scores = {
            qid: tuple(float(np.mean(scores.get(qid, {}).get(t) or [np.nan])) for t in (1, 2)) for qid in sorted(wanted)
        }
    else:  # the judgments are gone: the per-question means compare kept are enough for the intervals
        question_scores = {
            int(q): tuple(np.nan if v.get(f"turn{t}") is None else float(v[f"turn{t}"]) for t in (1, 2))
            for q, v in stored_questions.items()
        }
    by_category: dict[str, list[float]] = {}
    for qid, turns in question_scores.items():
        by_category.setdefault(category.get(qid) or "unknown", []).extend(t for t in turns if not math.isnan(t))
    ordered = [c for c in MT_BENCH_CATEGORIES if c in by_category] + sorted(set(by_category) - set(MT_BENCH_CATEGORIES))
    turn1 = np.array([t[0] for t in question_scores.values()], float)
    turn2 = np.array([t[1] for t in question_scores.values()], float)
    metric = lambda key: result.metrics[key].value if key in result.metrics else None  # noqa: E731
    spread = details.get("judge_spread") or {}
    repeats = int(spread.get("repeats") or 1)
    stored_repeats = 1 + max((int(r.get("repeat", 0)) for r in records), default=0)
    if stored_repeats > 1:  # one rating per repeat: the interval includes the judge's run-to-run spread
        from eval_harness.mt_bench.show import repeat_scores

        turn1, turn2 = repeat_scores(records, list(question_scores), stored_repeats)
    run = MtBenchRun(
        turn1=metric("turn1"), turn2=metric("turn2"), overall=metric("overall"),
        ci=stats.bootstrap_mt_bench(turn1, turn2, resamples, seed),
        per_category={c: (float(np.mean(by_category[c])) if by_category[c] else None) for c in ordered},
        question_scores=question_scores, parse_failures=parse_failures,
        n_judgments=len(records) or int(details.get("n_judgments") or 0), judge_model=judge_model,
        judge_spread=spread.get("overall_stdev"), repeats=repeats, judge=judge_label(result), judge_errors=judge_errors,
    )
    run.examples = _examples(result, results_dir, records, category, questions)
    return run


def _examples(result: TaskResult, results_dir: Path, records: list[dict], category: dict[int, str],
              questions: dict[int, tuple[str, list[str]]]) -> list[JudgedAnswer]:
    """Every unparsable verdict and the lowest-rated answers, with the texts the judge saw."""
    if not records:
        return []
    answer_file = _find(result.files.get("answers_file"), results_dir / MT_BENCH / "model_answer" / f"{result.run}.jsonl")
    answers = {}
    if answer_file is not None:
        for record in read_jsonl(answer_file):
            answers.setdefault(int(record["question_id"]), record.get("choices", [{}])[0].get("turns", []))
    failed = [r for r in records if r["score"] == PARSE_FAILURE]
    rated = sorted((r for r in records if r["score"] != PARSE_FAILURE), key=lambda r: (r["score"], r["question_id"], r["turn"]))
    out = []
    for r in failed + rated[:EXAMPLES_PER_RUN]:
        qid, turn = int(r["question_id"]), int(r["turn"])
        turns = answers.get(qid, [])
        prompts = questions.get(qid, ("", []))[1]
        out.append(JudgedAnswer(
            question_id=qid, category=category.get(qid) or "unknown", turn=turn, score=float(r["score"]),
            question=str(prompts[turn - 1]) if len(prompts) >= turn else "",
            answer=str(turns[turn - 1]) if len(turns) >= turn else "(answer file not found)",
            judgment=redact_key(str(r.get("judgment", ""))),  # files from before redaction may hold the key
        ))
    return out


def sample_answer(record: dict[str, Any]) -> str | None:
    """The answer in one lm-eval per-sample record: the generated (filtered) text, or for a
    multiple-choice item the continuation it gave the highest log-likelihood."""
    resps = record.get("filtered_resps")
    if not isinstance(resps, list) or not resps:
        return None
    if isinstance(resps[0], str):
        return resps[0].strip()
    if len(resps) < 2 or not all(isinstance(r, (list, tuple)) and r and isinstance(r[0], (int, float)) for r in resps):
        return None
    best = max(range(len(resps)), key=lambda i: resps[i][0])
    try:
        return str(record["arguments"][best][1]).strip()
    except (KeyError, IndexError, TypeError):
        return f"choice {best}"


def _accuracy(result: TaskResult, title: str, key: str, results_dir: Path) -> Accuracy:
    key = key or next(iter(result.metrics), "")
    metric = result.metrics.get(key)
    name, _, flt = key.partition(",")
    per_sample: dict[Any, float] = {}
    answers: dict[Any, str] = {}
    samples = _find(result.files.get("samples"), results_dir / "samples" / result.run / f"{result.task}.jsonl")
    if samples is not None:
        for record in read_jsonl(samples):
            if record.get("filter", "none") == (flt or "none") and isinstance(record.get(name), (int, float, bool)):
                item = int(record["doc_id"])
                item = (record["task"], item) if "task" in record else item
                per_sample[item] = float(record[name])
                answer = sample_answer(record)
                if answer is not None:
                    answers[item] = answer
    return Accuracy(
        title=title, task=result.task, metric=key, value=metric.value if metric else None,
        stderr=metric.stderr if metric else None, n=result.n_samples.get("effective"), per_sample=per_sample,
        num_fewshot=(result.details or {}).get("num_fewshot"), lm_eval_version=(result.details or {}).get("lm_eval_version"),
        answers=answers,
    )


def _stored_results(store: ResultStore, name: str, record: dict, problems: list[str]) -> dict[str, TaskResult]:
    results: dict[str, TaskResult] = {}
    for task, data in (record.get("results") or {}).items():
        try:
            results[task] = TaskResult.from_json(data, f"results.json run {name!r} task {task!r}")
        except ValueError as exc:
            problems.append(str(exc))
    folder = store.root / "results" / name
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            results[path.stem] = TaskResult.from_json(_read_json(path, "a TaskResult written by compare"), path)
        except ReportInputError as exc:
            problems.append(str(exc))
        except ValueError as exc:
            problems.append(f"{exc}; skipped")
    return results


def _training(record: dict, path: str | None) -> TrainingFacts:
    stored = record.get("training") or {}
    facts = TrainingFacts(**{k: v for k, v in stored.items() if k in TrainingFacts.__dataclass_fields__})
    if facts.peak_memory_gib and facts.peak_memory_kind is None:
        facts.peak_memory_kind = "gpu_trainer"  # records from before the kind was kept: the trainer was the only source
    if path and Path(path).is_dir():  # logs may have grown (or be newer than results.json)
        try:
            cfg = read_axolotl_config(Path(path))[0]
        except RunError:
            cfg = None  # compare already reported it; logging_steps defaults to 1
        fresh = read_training_facts(Path(path), cfg)
        for key in ("loss_curve", "train_loss", "runtime_s", "samples_per_second"):
            if getattr(fresh, key):
                setattr(facts, key, getattr(fresh, key))
        if fresh.peak_memory_gib:  # the figure and what it measures travel together
            facts.peak_memory_gib, facts.peak_memory_kind = fresh.peak_memory_gib, fresh.peak_memory_kind
        facts.trainable_params = facts.trainable_params or fresh.trainable_params
    return facts


def _lisa_activation(path: str | None, problems: list[str]) -> list[int] | None:
    if not path:
        return None
    try:
        history = read_lisa_history(Path(path))
    except ValueError as exc:
        problems.append(f"{exc}; no activation histogram")
        return None
    return history.activation_counts if history is not None else None


def _norm_profiles(paths: list[Path], problems: list[str]) -> dict[str, list[dict[str, Any]]]:
    """run name -> layer rows, from every ``lisa-plugin norms`` profile found."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        if not path.is_file():
            continue
        try:
            profile = NormsProfile.from_json(_read_json(path, "a lisa_norms/1 profile"), source=str(path))
        except (ReportInputError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{exc}; no weight-norm profile from it")
            continue
        for run in profile.runs:
            out.setdefault(run.name, [vars(row) for row in run.layers])
    return out


# --------------------------------------------------------------------------- assembling


def _read_compare_record(results_dir: Path) -> dict[str, Any]:
    summary_file = results_dir / RESULTS_FILE
    if not summary_file.is_file():
        return {}
    data = _read_json(summary_file, "the results.json written by `python -m eval_harness compare`")
    if not isinstance(data, dict) or not isinstance(data.get("runs", []), list):
        raise ReportInputError(f"{summary_file}: key 'runs' must be a list of runs; is this a compare results.json?")
    return data


def _norm_candidates(norms: Path | None, runs_dir: Path | None, results_dir: Path) -> list[Path]:
    if norms is not None and not Path(norms).is_file():
        raise ReportInputError(f"--norms {norms}: no such file (expected norms.json from `lisa-plugin norms`)")
    places = (norms, runs_dir and Path(runs_dir) / NORMS_FILE, runs_dir and Path(runs_dir) / "norms" / NORMS_FILE,
              results_dir / NORMS_FILE, results_dir / "norms" / NORMS_FILE)
    return [Path(p) for p in places if p]


def _run_entry(name: str, record: dict, results: dict[str, TaskResult], context: dict[str, Any]) -> RunEntry:
    """One leaderboard row from the run's record in results.json and its stored results."""
    results_dir = context["results_dir"]
    path = record.get("path")
    entry = RunEntry(name=name, method=record.get("method") or "?", settings=dict(record.get("settings") or {}),
                     path=path, training=_training(record, path))
    if not record:
        entry.problems.append(f"{results_dir / RESULTS_FILE}: no record of run {name!r} (method and settings unknown)")
    if not results:
        entry.problems.append(f"{results_dir / 'results' / name}: no stored result for run {name!r}")
    if MT_BENCH in results:
        entry.mt_bench = _mt_bench(results[MT_BENCH], results_dir, context["questions"], context["resamples"],
                                   context["seed"])
        entry.mt_bench_status = mt_bench_status(results[MT_BENCH])
    for column in context["columns"]:
        if column.task in results:
            entry.accuracy[column.title] = _accuracy(results[column.task], column.title, column.metric, results_dir)
    if entry.method == "LISA":
        entry.lisa_activation = _lisa_activation(path, entry.problems)
    return entry


def _pick_baseline(baseline: str | None, runs: list[RunEntry]) -> str | None:
    names = [r.name for r in runs]
    if baseline is not None and baseline not in names:
        raise ReportInputError(f"--baseline: {unknown('run', baseline, names)}")
    if baseline is None:
        baseline = next((r.name for r in runs if r.method == "LoRA"), None) or next(
            (r.name for r in runs if r.method == "QLoRA"), None)
    return baseline


def load_report_data(results_dir: Path, *, runs_dir: Path | None = None, mt_bench_dir: Path | None = None,
                     norms: Path | None = None, baseline: str | None = None,
                     resamples: int = stats.DEFAULT_RESAMPLES, seed: int = stats.DEFAULT_SEED) -> ReportData:
    """Everything the report shows, from ``results_dir`` (what ``compare --output`` wrote)."""
    results_dir = Path(results_dir)
    compare_data = _read_compare_record(results_dir)
    records = {r["name"]: r for r in compare_data.get("runs", []) if isinstance(r, dict) and r.get("name")}
    stored_dirs = sorted(p.name for p in (results_dir / "results").iterdir()) if (results_dir / "results").is_dir() else []
    if not records and not stored_dirs:
        raise ReportInputError(
            f"{results_dir}: no stored results (expected results.json and results/<run>/<task>.json from "
            "`python -m eval_harness compare`); run compare first, or point --results at its --output"
        )
    problems: list[str] = list(compare_data.get("problems", []))
    names = list(records) + [n for n in stored_dirs if n not in records]
    store = ResultStore(results_dir)
    all_results = {n: _stored_results(store, n, records.get(n, {}), problems) for n in names}
    if not any(all_results.values()):
        raise ReportInputError(f"{results_dir / 'results'}: no run has a stored result (no results/<run>/<task>.json)")
    questions, questions_file = question_categories(
        _mt_bench_dir(mt_bench_dir, [r for rs in all_results.values() for r in rs.values() if r.task == MT_BENCH])
    )
    tasks = list(compare_data.get("tasks") or [])
    tasks += sorted({t for rs in all_results.values() for t in rs} - set(tasks))
    context = {"results_dir": results_dir, "questions": questions, "resamples": resamples, "seed": seed,
               "columns": [c for c in headline_columns(tasks) if c.task != MT_BENCH]}
    norm_files = _norm_candidates(norms, runs_dir, results_dir)
    runs = [_run_entry(name, records.get(name, {}), all_results[name], context) for name in names]
    norm_files += [Path(r.path) / NORMS_FILE for r in runs if r.path]
    profiles = _norm_profiles(list(dict.fromkeys(norm_files)), problems)
    for entry in runs:
        entry.norms = profiles.get(entry.name)
    data = ReportData(results_dir=results_dir, compare=compare_data, runs=runs, columns=context["columns"],
                      baseline=_pick_baseline(baseline, runs), comparisons=[], questions_file=questions_file,
                      problems=problems, resamples=resamples, seed=seed)
    data.comparisons = paired_comparisons(data)
    return data


def paired_comparisons(data: ReportData) -> list[stats.PairedTest]:
    """Every pair of runs on every benchmark both have item-level scores for."""
    tests = []
    for i, a in enumerate(data.runs):
        for b in data.runs[i + 1:]:
            if a.mt_bench and b.mt_bench and a.mt_bench.judge == b.mt_bench.judge:  # never across judges
                tests.append(stats.paired_bootstrap("MT-Bench", a.name, b.name, a.mt_bench.question_means(),
                                                    b.mt_bench.question_means(), data.resamples, data.seed))
            for title in (c.title for c in data.columns):
                if title in a.accuracy and title in b.accuracy and a.accuracy[title].per_sample:
                    tests.append(stats.paired_bootstrap(title, a.name, b.name, a.accuracy[title].per_sample,
                                                        b.accuracy[title].per_sample, data.resamples, data.seed))
    return tests


def headline_tests(data: ReportData) -> list[tuple[str, stats.PairedTest]]:
    """LISA vs LoRA and LISA vs Full, oriented as "LISA minus other" (the statements the page makes)."""
    out = []
    for lisa in (r for r in data.runs if r.method == "LISA"):
        for other in (r for r in data.runs if r.method in ("LoRA", "QLoRA", "Full")):
            for test in data.comparisons:
                if {test.a, test.b} == {lisa.name, other.name}:
                    if test.a != lisa.name:
                        test = flip(test)
                    out.append((f"{lisa.name} vs {other.name}", test))
    return out


def constant_answer_notes(data: ReportData) -> list[str]:
    """One sentence per benchmark on which some run gave the same answer to every item (e.g. always "yes")."""
    found: dict[tuple[str, str, int], list[str]] = {}
    for run in data.runs:
        for title, acc in run.accuracy.items():
            if acc.constant_answer is not None:
                found.setdefault((title, acc.constant_answer, len(acc.answers)), []).append(run.name)
    notes = []
    for (title, answer, n), names in found.items():
        who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        notes.append(f"{who} gave one answer ({answer!r}) to all {n} items of {title.removesuffix(' %')}: a score "
                     "there is only how often that answer is right, not evidence that the questions were read.")
    return notes


def flip(test: stats.PairedTest) -> stats.PairedTest:
    neg = lambda x: None if x is None else -x  # noqa: E731
    return stats.PairedTest(test.benchmark, test.b, test.a, test.n, neg(test.diff), neg(test.high), neg(test.low),
                            test.p_value, test.resamples, test.seed)
