"""Any lm-eval task or group (GSM8K and PubMedQA among them), through ``lm_eval.simple_evaluate``.

Each benchmark's record (:mod:`eval_harness.benchmarks`) says which lm-eval task scores it, its
variants and how its data is prepared. For each report we write small YAMLs into
``<output>/tasks/`` that ``include:`` the task's YAML (lm-eval's stock one by default, a named
variant of ours otherwise) and point it at the data actually used, and load only that folder
through ``TaskManager(include_path=...)``. :func:`cache_key` says exactly what a stored result was
computed from: the task definition's files (YAMLs, included YAMLs, the Python they name), the
data files' contents, the lm-eval version, the backend and the generation settings.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml
from lisa_formats.atomic import write_jsonl_atomic, write_text_atomic
from lisa_formats.suggest import did_you_mean

from eval_harness.benchmarks import DataError, benchmark_for, registered
from eval_harness.benchmarks.registry import STOCK
from eval_harness.results import Metric, TaskResult
from eval_harness.subset import Subset, choose

if TYPE_CHECKING:
    from lm_eval.api.model import LM

    from eval_harness.discovery import Run
    from eval_harness.engines.backend import Endpoint

__all__ = ["DataError", "EvalOptions", "LmEvalTask", "cache_key", "check_task_names", "evaluate_task", "load_lm",
           "load_server_lm", "prepare_tasks", "task_manager"]

BACKEND = "lm-eval hf"  # lm_eval.models.huggingface.HFLM, see load_lm
SERVER_BACKEND = "lm-eval local-completions"  # LocalCompletionsAPI, see load_server_lm


@dataclass(frozen=True)
class EvalOptions:
    """How a comparison asks lm-eval to score: variants, token budget, chat template."""

    variants: Mapping[str, str] = field(default_factory=dict)  # benchmark -> variant name (unset: stock)
    max_new_tokens: int | None = None  # None: each task's own (lm-eval's default is 256)
    apply_chat_template: bool | str = False  # True, or the name of one of the tokenizer's templates
    fewshot_as_multiturn: bool = False  # exemplars as separate chat turns (needs apply_chat_template)


@dataclass
class LmEvalTask:
    """A benchmark as the user names it, and the lm-eval task (or group) that computes it."""

    name: str  # "gsm8k", "pubmedqa", or a stock lm-eval task name
    lm_eval_name: str
    num_fewshot: int | None  # the shots in force (None: the task's own, unknown here)
    data: str  # where the items come from, for the cache key and the report
    variant: str = STOCK
    files: tuple[Path, ...] = ()  # the data files read (hashed into the cache key)
    stratify_by: str | None = None  # the document field --limit keeps the proportions of
    max_new_tokens: int | None = None  # an explicit budget; None: the task's own
    max_new_tokens_in_yaml: bool = False  # the budget is in the generated YAML (else passed as gen_kwargs)
    apply_chat_template: bool | str = False
    fewshot_as_multiturn: bool = False


def prepare_tasks(
    names: list[str], out_dir: Path, data_dir: Path | None, fewshot: dict[str, int | None],
    options: EvalOptions | None = None,
) -> tuple[list[LmEvalTask], Path]:
    """Generate the task YAMLs of this report into ``out_dir/tasks``; return the tasks and that dir.

    ``fewshot`` overrides a benchmark's (or its variant's) own default by name.
    """
    options = options or EvalOptions()
    if options.fewshot_as_multiturn and not options.apply_chat_template:
        raise ValueError("fewshot_as_multiturn (--fewshot-as-multiturn) needs apply_chat_template (--apply-chat-template)")
    task_dir = out_dir / "tasks"
    task_dir.mkdir(parents=True, exist_ok=True)
    tasks = []
    for name in names:
        benchmark = benchmark_for(name)
        if not benchmark.uses_lm_eval:
            continue
        variant = options.variants.get(name, STOCK)
        prepared = benchmark.prepare_data(out_dir, data_dir, variant)
        shots = fewshot.get(name, benchmark.default_fewshot(variant))
        task = LmEvalTask(name, benchmark.lm_eval_task, shots, prepared.data, variant, prepared.files,
                          benchmark.stratify_by, options.max_new_tokens, False, options.apply_chat_template,
                          options.fewshot_as_multiturn)
        if prepared.overrides is not None:
            overrides = dict(prepared.overrides)
            if options.max_new_tokens is not None:
                budget = _generation_budget(Path(overrides["include"]), options.max_new_tokens)
                overrides.update(budget)
                task.max_new_tokens_in_yaml = True
                task.max_new_tokens = options.max_new_tokens if budget else None  # None: it generates nothing
            write_text_atomic(
                task_dir / f"{name}.yaml",
                "# Generated by eval_harness for this report; edits are overwritten on the next run.\n"
                + yaml.safe_dump(overrides, sort_keys=False),
            )
        tasks.append(task)
    return tasks, task_dir


def _generation_budget(task_file: Path, max_new_tokens: int) -> dict[str, Any]:
    """The included task's ``generation_kwargs`` with ``max_gen_toks`` set (a YAML key replaces the whole
    mapping, so the rest is carried over); nothing for a task that does not generate."""
    config = _definition(task_file)[0]
    if config.get("output_type") != "generate_until":
        return {}
    return {"generation_kwargs": {**(config.get("generation_kwargs") or {}), "max_gen_toks": max_new_tokens}}


# --------------------------------------------------------------------------- what a result was computed from


def _definition(path: Path, seen: set[Path] | None = None) -> tuple[dict[str, Any], list[Path]]:
    """A task YAML with its ``include:``s merged as lm-eval merges them, and every file it rests on
    (the YAMLs and the Python modules its ``!function`` tags name)."""
    seen = set() if seen is None else seen
    path = Path(path).resolve()
    modules: list[str] = []

    class Loader(yaml.SafeLoader):
        pass

    def function_tag(loader, node):
        modules.append(loader.construct_scalar(node).rsplit(".", 1)[0])
        return f"!function {loader.construct_scalar(node)}"

    Loader.add_constructor("!function", function_tag)
    config = yaml.load(path.read_text(), Loader=Loader) or {}
    files = [path] + [path.parent / f"{module}.py" for module in modules]  # where lm-eval imports it from
    seen.add(path)
    includes = config.pop("include", None) or []
    merged: dict[str, Any] = {}
    for include in reversed([includes] if isinstance(includes, str) else includes):
        target = Path(include) if Path(include).is_file() else path.parent / include
        if target.resolve() not in seen:
            sub, sub_files = _definition(target, seen)
            merged.update(sub)
            files += sub_files
    merged.update(config)
    return merged, files


def _definition_files(manager, name: str, seen: set[str]) -> list[Path]:
    """The files behind a task, group or tag ``name`` of ``manager`` (a group's: its own and its tasks')."""
    entry = manager.task_index.get(name)
    if entry is None or name in seen:
        return []
    seen.add(name)
    files: list[Path] = []
    members = entry.get("task") if isinstance(entry.get("task"), list) else []
    if entry.get("yaml_path", -1) != -1:
        config, files = _definition(Path(entry["yaml_path"]))
        if entry.get("type") == "group":
            members = [t for t in (config.get("task") or []) if isinstance(t, str)]
    return files + [f for member in members for f in _definition_files(manager, member, seen)]


def _sha16(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def task_definition_hash(manager, name: str) -> str:
    """One hash of the contents of every file the task ``name`` is defined by."""
    digest = hashlib.sha256()
    for path in sorted(set(_definition_files(manager, name, set()))):
        digest.update(path.name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"<missing>") + b"\0")
    return digest.hexdigest()[:16]


def cache_key(task: LmEvalTask, manager, generation: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything about the task a stored result must match to be reused (the run's side is compare's).

    ``generation``: the backend's identity (:mod:`eval_harness.engines`); None: lm-eval's ``hf`` model."""
    return {
        "data": task.data,
        "data_sha256": {path.name: _sha16(path.read_bytes()) for path in task.files},
        "task_sha256": task_definition_hash(manager, task.lm_eval_name),
        "lm_eval_version": _lm_eval_version(),
        "backend": SERVER_BACKEND if generation and generation.get("backend") == "server" else BACKEND,
        **({"generation": generation} if generation else {}),
        "variant": task.variant,
        "num_fewshot": task.num_fewshot,
        "max_new_tokens": task.max_new_tokens,
        "apply_chat_template": task.apply_chat_template,
        "fewshot_as_multiturn": task.fewshot_as_multiturn,
    }


def task_manager(task_dir: Path):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(task_dir))


def check_task_names(tasks: list[LmEvalTask], manager) -> list[str]:
    """Error messages for names lm-eval does not know, with the closest known name."""
    known = set(manager.all_tasks)
    return [
        f"Unknown lm-eval task {task.name!r}.{did_you_mean(task.name, sorted(known | set(registered())))} "
        "(see `lm-eval ls tasks`)"
        for task in tasks
        if task.lm_eval_name not in known
    ]


# --------------------------------------------------------------------------- models


def tokenizer_source(run: "Run") -> str:
    """Axolotl saves the tokenizer it trained with into the run dir: prefer it."""
    if run.path and (Path(run.path) / "tokenizer_config.json").exists():
        return run.path
    return run.model_path


def load_lm(run: "Run", *, batch_size: int | str, dtype: str, device: str, max_length: int | None = None) -> "LM":
    """An lm-eval ``hf`` model for the run: full weights, or base + adapter through peft."""
    from lm_eval.models.huggingface import HFLM

    kwargs: dict[str, Any] = dict(
        pretrained=run.model_path, tokenizer=tokenizer_source(run), dtype=dtype, device=device, batch_size=batch_size
    )
    if run.adapter_path:
        kwargs["peft"] = run.adapter_path
    if max_length:
        kwargs["max_length"] = max_length
    return HFLM(**kwargs)


def load_server_lm(run: "Run", endpoint: "Endpoint", *, concurrency: int, max_length: int | None = None) -> "LM":
    """lm-eval's ``local-completions`` model on ``endpoint``, tokenizing with the run's tokenizer and sending
    token ids (the very ids the ``hf`` model would feed itself; loglikelihood tasks need them too)."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    return LocalCompletionsAPI(
        base_url=f"{endpoint.base_url}/v1/completions", model=endpoint.model, tokenizer=tokenizer_source(run),
        tokenizer_backend="huggingface", tokenized_requests=True, num_concurrent=concurrency, max_retries=3,
        # the hf model encodes with the tokenizer's own special tokens (a BOS where it adds one); the API model
        # encodes without them unless told to
        add_bos_token=True,
        max_length=max_length or endpoint.max_model_len or 2048, timeout=600,
    )


# --------------------------------------------------------------------------- evaluation


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # lm-eval writes "N/A" for stderrs it cannot compute


def evaluate_task(
    lm: "LM",
    run_name: str,
    task: LmEvalTask,
    manager,
    *,
    limit: int | None,
    samples_path: Path,
    settings: dict[str, Any],
    max_new_tokens: int | None = None,
) -> TaskResult:
    """Score one run on one task; the per-sample log is written to ``samples_path``.

    ``limit``: score a seeded subset of that many items per (sub)task (:mod:`eval_harness.subset`),
    the same for every run. ``max_new_tokens``: a budget for this call only (lm-eval's ``gen_kwargs``);
    the comparison's own (``task.max_new_tokens``) is in the generated YAML already. For an lm-eval group the log holds every
    subtask's samples, each tagged with its ``task``, and ``n_samples`` counts them all, so the
    report keeps n and its paired tests for groups.
    """
    from lm_eval import simple_evaluate

    if max_new_tokens is not None and max_new_tokens != task.max_new_tokens:
        task = replace(task, max_new_tokens=max_new_tokens, max_new_tokens_in_yaml=False)
    start = time.time()
    subsets = choose_subsets(task, manager, limit) if limit is not None else {}
    budget = task.max_new_tokens if task.max_new_tokens is not None and not task.max_new_tokens_in_yaml else None
    out = simple_evaluate(
        model=lm,
        tasks=[task.lm_eval_name],
        num_fewshot=_fewshot_to_pass(task, manager),  # None: the task's own; an equal number only logs noise
        samples={leaf: list(s.indices) for leaf, s in subsets.items() if not s.is_everything} or None,
        task_manager=manager,
        log_samples=True,
        gen_kwargs={"max_gen_toks": budget} if budget is not None else None,
        apply_chat_template=task.apply_chat_template,
        fewshot_as_multiturn=task.fewshot_as_multiturn,
        bootstrap_iters=1000,
    )
    if out is None:  # non-zero ranks under accelerate return None
        raise RuntimeError(f"lm-eval returned no results for {task.lm_eval_name}")
    return _task_result(out, run_name, task, subsets, samples_path, settings, time.time() - start)


def _task_result(out: dict[str, Any], run_name: str, task: LmEvalTask, subsets: dict[str, Subset],
                 samples_path: Path, settings: dict[str, Any], seconds: float) -> TaskResult:
    leaves = leaf_tasks(out, task.lm_eval_name)
    write_jsonl_atomic(samples_path, _samples(out, leaves, grouped=leaves != [task.lm_eval_name]))
    counts = [out.get("n-samples", {}).get(leaf, {}) for leaf in leaves]
    shots = out.get("n-shot", {})
    original = _total(c.get("original") for c in counts)
    # lm-eval counts a `samples` selection as every item; the subsets know what was scored
    effective = sum(s.n for s in subsets.values()) if subsets else _total(c.get("effective") for c in counts)
    return TaskResult(
        run=run_name,
        task=task.name,
        metrics=_metrics(out["results"][task.lm_eval_name]),
        n_samples={"original": original, "effective": effective},
        settings=settings,
        seconds=round(seconds, 2),
        files={"samples": str(samples_path)},
        details={
            "lm_eval_task": task.lm_eval_name,
            "num_fewshot": shots.get(task.lm_eval_name, shots.get(leaves[0], task.num_fewshot)),
            "lm_eval_version": _lm_eval_version(),
            "variant": task.variant,
            "subset": _subset_record(subsets, original, effective),
            **({"subtasks": leaves} if leaves != [task.lm_eval_name] else {}),
        },
    )


def _subset_record(subsets: dict[str, Subset], original: int | None, effective: int | None) -> dict[str, Any]:
    """``{"n", "of", "description", ...}``: which items were scored, for results.json and the report."""
    if len(subsets) == 1:
        return next(iter(subsets.values())).to_json()
    everything = not subsets or all(s.is_everything for s in subsets.values())
    description = (f"all {original} items" if everything
                   else f"subset of {effective} of {original} items (seeded, per subtask)")
    return {"n": effective, "of": original, "description": description}


def choose_subsets(task: LmEvalTask, manager, limit: int) -> dict[str, Subset]:
    """The items ``--limit`` scores in each leaf task of ``task``: a seeded subset of ``limit``, stratified
    by the benchmark's field (PubMedQA: the label), uniform otherwise."""
    from lm_eval.tasks import get_task_dict

    out: dict[str, Subset] = {}
    for leaf in _leaves(get_task_dict([task.lm_eval_name], manager)):
        docs = leaf.eval_docs
        field_name = task.stratify_by if task.stratify_by and len(docs) and task.stratify_by in docs[0] else None
        strata = [doc[field_name] for doc in docs] if field_name else [None] * len(docs)
        out[leaf.config.task] = choose(strata, limit, stratified_by=field_name)
    return out


def _leaves(task_dict: dict) -> list:
    return [leaf for value in task_dict.values()
            for leaf in (_leaves(value) if isinstance(value, dict) else [value])]


def _fewshot_to_pass(task: LmEvalTask, manager) -> int | None:
    """``task.num_fewshot`` when it differs from what the task's YAML says (lm-eval: unset means 0)."""
    if task.num_fewshot is None:
        return None
    entry = manager.task_index.get(task.lm_eval_name) or {}
    if entry.get("type") == "task" and entry.get("yaml_path", -1) != -1:
        if task.num_fewshot == (_definition(Path(entry["yaml_path"]))[0].get("num_fewshot") or 0):
            return None
    return task.num_fewshot


def leaf_tasks(out: dict[str, Any], name: str) -> list[str]:
    """The tasks that hold ``name``'s samples: itself, or every task under the group ``name``."""
    children = out.get("group_subtasks", {}).get(name) or []
    return [leaf for child in children for leaf in leaf_tasks(out, child)] if children else [name]


def _samples(out: dict[str, Any], leaves: list[str], grouped: bool) -> list[dict[str, Any]]:
    logged = out.get("samples", {})
    if not grouped:
        return list(logged.get(leaves[0], []))
    return [{"task": leaf, **sample} for leaf in leaves for sample in logged.get(leaf, [])]


def _metrics(scores: dict[str, Any]) -> dict[str, Metric]:
    metrics: dict[str, Metric] = {}
    for key, value in scores.items():
        if key == "alias" or "_stderr," in key or _number(value) is None:
            continue
        metric, _, flt = key.partition(",")
        metrics[key] = Metric(value=float(value), stderr=_number(scores.get(f"{metric}_stderr,{flt}")))
    return metrics


def _total(values) -> int | None:
    values = list(values)
    return None if not values or any(v is None for v in values) else sum(values)


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")
