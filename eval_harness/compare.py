"""``compare``: evaluate every run (and the base model as "Vanilla") on every task.

Each (run, task) result is written the moment it exists and reused by the next invocation
when it was computed with the same settings; ``results.json`` is rewritten (by
:mod:`eval_harness.report`) after each one, so a Ctrl-C loses at most the task in progress.
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from lisa_formats.escape import printable
from lisa_formats.suggest import unknown

from eval_harness import report
from eval_harness.benchmarks import DEFAULT_TASKS, MT_BENCH, DataError, benchmark_for
from eval_harness.benchmarks.mt_bench import resolve_dir as resolve_mt_bench_dir
from eval_harness.discovery import (REFERENCE_METHOD, RUN_LAYOUT, VANILLA, Discovery, discover_runs, is_report_dir,
                                    looks_like_run, model_context, weights_fingerprint)
from eval_harness.engines.backend import BackendSettings
from eval_harness.engines.server import EngineStartError
from eval_harness.lm_eval_runner import (EvalOptions, LmEvalTask, cache_key, check_task_names, evaluate_task, load_lm,
                                         load_server_lm, prepare_tasks, task_manager, tokenizer_source)
from eval_harness.report.stats import DEFAULT_RESAMPLES, DEFAULT_SEED
from eval_harness.report.summary import format_metrics
from eval_harness.results import Metric, OutputLock, OutputUnavailable, ResultStore, RunOutcome, TaskResult

if TYPE_CHECKING:
    from eval_harness.engines.session import RunServer
    from eval_harness.mt_bench.reference import ReferenceAnswers

__all__ = ["DEFAULT_TASKS", "MT_BENCH", "CompareSettings", "Comparison", "RunOutcome", "compare"]


@dataclass
class CompareSettings:
    """Every option of ``compare``; secrets (the judge's API key) never go in here."""

    runs_dir: Path
    output: Path
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    limit: int | None = None
    judge_model: str | None = None
    judge_base_url: str | None = None
    judge_engine_model: str | None = None  # a local judge model served from the engine env (--judge-engine-model)
    judge_repeats: int = 1
    judge_concurrency: int = 4
    rejudge_failed: bool = False  # re-ask stored unparsable verdicts and judge errors
    judge_constrain_verdict: bool = False  # the judge server enforces "... Rating: [[N]]" (vLLM structured outputs)
    pairwise_baseline: str | None = None  # run name: also judge every other run against it (pair-v2)
    data_dir: Path | None = None
    mt_bench_dir: Path | None = None
    fewshot: dict[str, int] = field(default_factory=dict)  # task -> shots; unset: the benchmark's default
    batch_size: str = "1"
    dtype: str = "auto"
    device: str = "cpu"
    max_new_tokens: int | None = None  # None: each benchmark's own (lm-eval's task: GSM8K 256; MT-Bench: 1024)
    variants: dict[str, str] = field(default_factory=dict)  # benchmark -> named variant; unset: lm-eval's stock task
    apply_chat_template: bool | str = False  # lm-eval prompts through the tokenizer's chat template (or the named one)
    fewshot_as_multiturn: bool = False  # with a chat template: each exemplar its own user/assistant turn
    template: str | None = None
    backend: BackendSettings = field(default_factory=BackendSettings)  # hf here, or an OpenAI-compatible server
    base_model: str | None = None
    methods: dict[str, str] = field(default_factory=dict)
    run_settings: dict[str, dict[str, str]] = field(default_factory=dict)
    references: list[Path] = field(default_factory=list)  # FastChat answer files (or folders): one row each
    # the leaderboard compare ends with: the options of `report`, with its defaults
    baseline: str | None = None  # the run the Δ column is measured against (None: the LoRA run)
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    formats: list[str] = field(default_factory=lambda: list(report.FORMATS))
    norms: Path | None = None
    origin: str | None = None  # "demo" when lisa-demo-compare runs it: the page then says what a demo can show
    origin_note: str | None = None  # the demo's own sentence on what its numbers can and cannot show

    def to_json(self) -> dict[str, Any]:
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        out["backend"] = self.backend.to_json()
        return out

    @property
    def resolved_mt_bench_dir(self) -> Path | None:
        return resolve_mt_bench_dir(self.mt_bench_dir, self.data_dir)

    def lm_eval_options(self) -> EvalOptions:
        return EvalOptions(self.variants, self.max_new_tokens, self.apply_chat_template, self.fewshot_as_multiturn)


def base_model_source(base_model: str | None) -> dict[str, Any] | None:
    """Where a local base model's weights came from (its ``lisa_model_source.json``, written by
    ``lisa-plugin model``), without the file list; None for a hub id or a folder without one."""
    from lisa_formats.model_source import read_model_source

    if not base_model or not Path(base_model).is_dir():
        return None
    try:
        record = read_model_source(base_model)
    except ValueError as exc:
        return {"error": str(exc)}
    return {k: v for k, v in record.items() if k != "files"} if record else None


class _ModelLoadError(RuntimeError):
    """The run's model could not be loaded: skip its remaining tasks."""


class Comparison:
    def __init__(self, settings: CompareSettings, log: TextIO | None = None):
        self.settings = settings
        self.log = log or sys.stderr
        self.store = ResultStore(settings.output)
        self.problems: list[str] = []
        self.outcomes: list[RunOutcome] = []
        self.discovery: Discovery | None = None
        self.references: list[ReferenceAnswers] = []  # --reference answer files, read and checked
        self._mt_bench_questions: tuple[Any, list, Any] | None = None  # (MTBench, questions scored, Subset)
        self._server: RunServer | None = None  # the server of the run being evaluated (backend server)
        self._judge_server: RunServer | None = None  # --judge-engine-model: started on first need, stopped at the end
        self._judge_engine_name: str | None = None
        self.started = time.time()

    # ----------------------------------------------------------------- messages and files

    def say(self, message: str) -> None:
        print(f"[compare {time.time() - self.started:7.1f}s] {printable(message, keep_newlines=True)}", file=self.log,
              flush=True)

    def problem(self, message: str, shown: str | None = None) -> None:
        self.problems.append(message)
        self.say(f"PROBLEM {shown or message}")

    def write_report(self, complete: bool = False) -> Path:
        """``results.json`` as it stands (written by the report package, its one writer)."""
        return report.write_progress(self.settings.output, {
            "settings": self.settings.to_json(),
            "base_model": self.discovery.base_model if self.discovery else None,
            "base_model_source": base_model_source(self.discovery.base_model if self.discovery else None),
            "tasks": list(self.settings.tasks),
            "problems": self.problems,
            "runs": [outcome.to_json() for outcome in self.outcomes],
        }, complete)

    # ----------------------------------------------------------------- the run

    def nothing_to_do(self) -> str | None:
        """Why nothing can be evaluated (no run, no usable run, a --baseline naming no run), or None.

        Discovers the runs and reads the --reference answer files (checked against MT-Bench's questions);
        it writes nothing, so a refusal leaves every file as it was."""
        self._discover()
        s, runs = self.settings, self.discovery.runs
        refusal = self._read_references()
        if refusal:
            return f"{refusal}; nothing was evaluated or written"
        if not any(run.name != VANILLA for run in runs) and not self.references:
            return (f"no Axolotl run found under {s.runs_dir}: expected it, or folders in it, to be Axolotl output "
                    f"dirs holding {RUN_LAYOUT}; nothing was evaluated or written")
        if not any(run.ok for run in runs if run.name != VANILLA) and not self.references:
            return (f"no run under {s.runs_dir} can be evaluated: every run found has an error (listed above); "
                    "nothing was evaluated or written")
        names = [run.name for run in runs] + [ref.name for ref in self.references]
        if s.baseline is not None and s.baseline not in names:
            return f"--baseline: {unknown('run', s.baseline, names)}; nothing was evaluated or written"
        if s.output.is_dir() and looks_like_run(s.output) and not is_report_dir(s.output):
            return (f"--output {s.output} is an Axolotl run folder (a run named {s.output.name!r}?); the report would "
                    "be written into it and the run left out. Pass --output with another folder; nothing was "
                    "evaluated or written")
        return self._budget_problem()

    def _budget_problem(self) -> str | None:
        """--max-new-tokens that leaves no room for a prompt in some model's context (lm-eval would assert),
        or an --engine-python without vLLM."""
        backend = self.settings.backend
        if (backend.starts_server or self.settings.judge_engine_model) and backend.engine_python:
            from eval_harness.engines.backend import installed_vllm

            try:
                installed_vllm(backend.engine_python)
            except ValueError as exc:
                return f"{exc}; nothing was evaluated or written"
        budget = self.settings.max_new_tokens
        for run in self.discovery.runs if budget else []:
            context = model_context(run.model_path) if run.ok else None
            if context is not None and budget >= context:
                return (f"--max-new-tokens {budget}: run {run.name}'s model ({run.model_path}) reads at most {context} "
                        f"tokens, prompt included; set --max-new-tokens below {context} (e.g. {context // 4}); "
                        "nothing was evaluated or written")
        return None

    def run(self) -> int:
        s = self.settings
        if self.discovery is None:
            self._discover()
        s.output.mkdir(parents=True, exist_ok=True)
        lm_tasks, manager = self._prepare_lm_eval_tasks()
        self.write_report()
        runs = [o for o in self.outcomes if o.run.ok and o.run.method != REFERENCE_METHOD]
        todo = [(o, t) for o in runs for t in s.tasks]
        done = 0
        if s.backend.kind == "hf":
            from eval_harness.engines.backend import sane_threads

            sane_threads(s.backend.threads)
        try:  # the judge's server (--judge-engine-model) is stopped however this ends, Ctrl-C included
            for outcome in runs:
                lm = None
                self._server = self._run_server(outcome)
                try:
                    for task in s.tasks:
                        done += 1
                        prefix = f"[{done}/{len(todo)}] {outcome.run.name} / {task}"
                        lm, stop = self._evaluate(outcome, task, lm_tasks, manager, lm, prefix)
                        self.write_report()
                        if stop:
                            break
                finally:
                    lm = _release(lm)
                    if self._server is not None:
                        self._server.close()
            self._judge_references()
        finally:
            if self._judge_server is not None:
                self._judge_server.close()
        self.write_report(complete=True)
        return 0 if not self.problems else 1

    def _evaluate(self, outcome: RunOutcome, task: str, lm_tasks: dict[str, LmEvalTask], manager, lm, prefix: str):
        """One (run, task); returns the model to reuse, and whether the run's other tasks must be skipped."""
        try:
            if not benchmark_for(task).uses_lm_eval:
                lm = _release(lm)  # MT-Bench loads its own copy of the model
                self._mt_bench(outcome, prefix)
            elif task in lm_tasks:
                lm = self._lm_eval(outcome, lm_tasks[task], manager, lm, prefix)
            # else: the task could not be prepared; said so once already
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one failing model or task must not stop the others
            message = f"{type(exc).__name__}: {exc}"
            outcome.task_errors[task] = message
            self.problems.append(f"run {outcome.run.name} / {task}: {message}")
            self.say(f"{prefix}: FAILED {message}")
            return lm, isinstance(exc, (_ModelLoadError, EngineStartError))  # its other tasks would fail alike
        return lm, False

    def _discover(self) -> None:
        s = self.settings
        self.discovery = discover_runs(
            s.runs_dir, exclude=[s.output], base_model=s.base_model,
            method_overrides=s.methods, setting_overrides=s.run_settings,
        )
        for problem in self.discovery.problems:
            self.problem(problem)
        if s.pairwise_baseline:
            names = [run.name for run in self.discovery.runs]
            if s.pairwise_baseline not in names:
                self.problem(f"--pairwise-baseline: no run named {s.pairwise_baseline!r}; runs: {', '.join(names)}")
            # The baseline's answers must exist before the others are judged against them.
            self.discovery.runs.sort(key=lambda run: run.name != s.pairwise_baseline)
        self.outcomes = [RunOutcome(run) for run in self.discovery.runs]
        for run in self.discovery.runs:
            detail = ", ".join(f"{k}={v}" for k, v in run.settings.items() if k in ("gamma", "K", "r", "alpha"))
            self.say(f"run {run.name}: {run.method}{' (' + detail + ')' if detail else ''}"
                     f"{' adapter on ' + str(run.base_model) if run.adapter_path else ''}")
            for warning in run.warnings:
                self.say(f"  warning: {warning}")
            for error in run.errors:
                self.say(f"  ERROR {error}; not evaluated")
                self.problems.append(f"run {run.name}: {error}")

    # ----------------------------------------------------------------- --reference: answers from files

    def _read_references(self) -> str | None:
        """Read and check the --reference answer files against the MT-Bench questions scored; why they
        cannot be used, or None. Their rows join the runs' (after them)."""
        s = self.settings
        if not s.references:
            return None
        from eval_harness.mt_bench import data
        from eval_harness.mt_bench.reference import check_complete, read_references, reference_run

        if MT_BENCH not in s.tasks:
            return f"--reference: answers are MT-Bench answers, but --tasks {','.join(s.tasks)} has no {MT_BENCH}"
        taken = {run.name: f"run {run.name!r}" for run in self.discovery.runs}
        taken[VANILLA] = f"the base model's row {VANILLA!r}"
        try:
            self.references = read_references(s.references, taken)
            bench = data.load(s.resolved_mt_bench_dir)
            subset = data.subset(bench.questions, s.limit)
            questions = data.select(bench.questions, s.limit)
            for ref in self.references:
                check_complete(ref, questions, subset.describe())
        except (OSError, RuntimeError, ValueError) as exc:  # ReferenceInputError is a ValueError
            self.references = []
            return str(exc)
        self._mt_bench_questions = (bench, questions, subset)
        self.outcomes += [RunOutcome(reference_run(ref)) for ref in self.references]
        for ref in self.references:
            self.say(f"reference {ref.name}: {len(ref.answers)} answers from {ref.path} (method {REFERENCE_METHOD})")
        return None

    def _judge_references(self) -> None:
        """Grade every --reference row with the runs' judge, into the runs' judgment file (reused on re-runs).

        Rows whose result is cached are taken first, so the judge (and a judge server under
        --judge-engine-model) is opened only when some row still has something to grade."""
        from eval_harness.mt_bench.judge import open_judge

        s = self.settings
        outcomes = {o.run.name: o for o in self.outcomes if o.run.method == REFERENCE_METHOD}
        pending: list[tuple[str, ReferenceAnswers, dict[str, Any]]] = []
        for i, ref in enumerate(self.references, start=1):
            prefix = f"[reference {i}/{len(self.references)}] {ref.name} / {MT_BENCH}"
            try:
                key = self._reference_key(ref)
                if self._reuse(outcomes[ref.name], MT_BENCH, key):
                    self.say(f"{prefix}: done before, skipped")
                    continue
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                self._reference_failed(outcomes[ref.name], ref, prefix, exc)
                continue
            pending.append((prefix, ref, key))
        if not pending:
            return
        grading = None
        try:
            judge = self._judge_settings()
            grading = open_judge(judge, s.judge_repeats, s.judge_concurrency, s.rejudge_failed) if judge else None
            for prefix, ref, key in pending:
                try:
                    self._reference(outcomes[ref.name], ref, key, grading, prefix)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # like a run's task: one failing row must not stop the others
                    self._reference_failed(outcomes[ref.name], ref, prefix, exc)
                self.write_report()
        finally:
            if grading is not None:
                grading.judge.close()

    def _reference_failed(self, outcome: RunOutcome, ref: ReferenceAnswers, prefix: str, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        outcome.task_errors[MT_BENCH] = message
        self.problem(f"reference {ref.name} / {MT_BENCH}: {message}", f"{prefix}: FAILED {message}")

    def _reference_key(self, ref: ReferenceAnswers) -> dict[str, Any]:
        s = self.settings
        mt_bench_dir = s.resolved_mt_bench_dir
        return {"reference": ref.sha256, "limit": s.limit, "mt_bench_dir": str(mt_bench_dir) if mt_bench_dir else None,
                "judge": self._judge_key()}

    def _reference(self, outcome: RunOutcome, ref: ReferenceAnswers, key: dict[str, Any], grading,
                   prefix: str) -> None:
        from eval_harness.mt_bench.reference import judge_reference

        s = self.settings
        bench, questions, subset = self._mt_bench_questions
        self.say(f"{prefix}: {'judging with ' + s.judge_model if grading else 'checked (no --judge-model: not judged)'}")
        start = time.time()
        summary = judge_reference(bench, questions, ref, s.output / MT_BENCH, grading, subset.to_json())
        self._store_mt_bench(outcome, summary, key, start, prefix)

    def _prepare_lm_eval_tasks(self) -> tuple[dict[str, LmEvalTask], Any]:
        s = self.settings
        names = [t for t in s.tasks if benchmark_for(t).uses_lm_eval]
        if not names:
            return {}, None
        tasks: list[LmEvalTask] = []
        for name in names:
            try:
                tasks += prepare_tasks([name], s.output, s.data_dir, s.fewshot, s.lm_eval_options())[0]
            except (DataError, OSError, LookupError, ValueError) as exc:
                self.problem(f"task {name}: {exc}", f"task {name}: {exc}; not evaluated")
        manager = task_manager(s.output / "tasks")
        for error in check_task_names(tasks, manager):
            self.problem(error)
        known = set(manager.all_tasks)
        return {t.name: t for t in tasks if t.lm_eval_name in known}, manager

    def _run_server(self, outcome: RunOutcome) -> "RunServer | None":
        """The run's server under --backend server (started only when a task needs it), else None."""
        if self.settings.backend.kind != "server":
            return None
        from eval_harness.engines.session import RunServer

        run = outcome.run
        return RunServer(self.settings.backend, run.name, run.model_path, run.adapter_path, tokenizer_source(run),
                         self.settings.output / "engine", self.say)

    def _generation(self) -> dict[str, Any]:
        """Backend, engine and version: part of every cache key, so switching backend never reuses a result."""
        if self._server is not None:
            return self._server.identity()
        from eval_harness.engines.backend import hf_identity

        return hf_identity()

    def _cache_key(self, outcome: RunOutcome) -> dict[str, Any]:
        """What a stored result of this run must have been computed with to be reused (any task)."""
        s, run = self.settings, outcome.run
        return {
            "model": run.model_path, "adapter": run.adapter_path,
            "weights": weights_fingerprint(run.adapter_path or run.path or run.model_path),
            "limit": s.limit, "max_new_tokens": s.max_new_tokens, "dtype": s.dtype, "generation": self._generation(),
        }

    def _reuse(self, outcome: RunOutcome, task: str, key: dict[str, Any]) -> bool:
        cached = self.store.cached(outcome.run.name, task, key)
        if cached is None:
            return False
        details = cached.details or {}
        if task == MT_BENCH and self.settings.rejudge_failed and (details.get("parse_failures") or details.get("judge_errors")):
            return False  # --rejudge-failed: reopen a result that holds unparsable verdicts or errors
        outcome.results[task] = cached
        outcome.cached.append(task)
        return True

    def _lm_eval(self, outcome: RunOutcome, task: LmEvalTask, manager, lm, prefix: str):
        s, run = self.settings, outcome.run
        run_key = self._cache_key(outcome)
        key = {**run_key, **cache_key(task, manager, run_key["generation"])}
        if self._reuse(outcome, task.name, key):
            self.say(f"{prefix}: done before ({self.store.result_path(run.name, task.name)}), skipped")
            return lm
        if lm is None:
            self.say(f"{prefix}: loading {run.model_path}{' + adapter ' + run.adapter_path if run.adapter_path else ''}")
            try:
                lm = (load_lm(run, batch_size=s.batch_size, dtype=s.dtype, device=s.device) if self._server is None
                      else load_server_lm(run, self._server.endpoint(), concurrency=s.backend.concurrency,
                                          max_length=model_context(run.model_path)))
            except Exception as exc:
                raise _ModelLoadError(f"cannot load the model: {type(exc).__name__}: {exc}") from exc
        self.say(f"{prefix}: evaluating ({task.num_fewshot}-shot, limit {s.limit or 'none'})")
        result = evaluate_task(
            lm, run.name, task, manager, limit=s.limit, max_new_tokens=task.max_new_tokens,
            samples_path=self.store.samples_path(run.name, task.name), settings=key,
        )
        self.store.save(result)
        outcome.results[task.name] = result
        self.say(f"{prefix}: {format_metrics(task.name, result)} "
                 f"(n={result.n_samples.get('effective')}, {result.seconds:.0f}s)")
        return lm

    def _mt_bench(self, outcome: RunOutcome, prefix: str) -> None:
        s, run = self.settings, outcome.run
        from eval_harness.mt_bench import run_mt_bench

        mt_bench_dir = s.resolved_mt_bench_dir
        budget = s.max_new_tokens if s.max_new_tokens is not None else benchmark_for(MT_BENCH).max_new_tokens
        key = {
            **self._cache_key(outcome), "mt_bench_dir": str(mt_bench_dir) if mt_bench_dir else None,
            "judge": self._judge_key(), "template": s.template, "pairwise_baseline": s.pairwise_baseline,
            "max_new_tokens": budget,
        }
        baseline_answers = self._baseline_answers(run.name) if s.judge_model else None
        if self._reuse(outcome, MT_BENCH, key):
            self.say(f"{prefix}: done before, skipped")
            return
        judge = self._judge_settings()  # after the cache: a judge server starts only when something is judged
        self.say(f"{prefix}: answering{' and judging with ' + s.judge_model if judge else ' (no --judge-model: not judged)'}")
        start = time.time()
        summary = run_mt_bench(
            model_id=run.name, model_path=run.model_path, adapter_path=run.adapter_path,
            out_dir=s.output / MT_BENCH, mt_bench_dir=mt_bench_dir, judge=judge, limit=s.limit,
            template=s.template, max_new_tokens=budget, device=s.device, dtype=s.dtype,
            batch_size=s.batch_size, pairwise_baseline=baseline_answers, judge_repeats=s.judge_repeats,
            judge_concurrency=s.judge_concurrency, rejudge_failed=s.rejudge_failed,
            # answers all cached (only the judge changed, say): the run's server never starts
            endpoint=self._server.lazy_endpoint() if self._server is not None else None,
            concurrency=s.backend.concurrency,
        )
        self._store_mt_bench(outcome, summary, key, start, prefix)

    def _judge_settings(self):
        s = self.settings
        if not s.judge_model:
            return None
        from eval_harness.mt_bench import JudgeSettings

        if s.judge_engine_model:
            return self._engine_judge()
        return JudgeSettings(model=s.judge_model, base_url=s.judge_base_url, repeats=s.judge_repeats,
                             concurrency=s.judge_concurrency, rejudge_failed=s.rejudge_failed,
                             verdict_regex=self._verdict_regex())

    def _engine_judge(self):
        """--judge-engine-model: a judge on a vLLM server of that model, started once from the engine env."""
        from dataclasses import replace

        from eval_harness.engines.judge import EngineJudge
        from eval_harness.engines.session import RunServer
        from eval_harness.mt_bench import JudgeSettings

        s = self.settings
        if self._judge_server is None:
            engine = replace(s.backend, kind="server", server_url=None)
            self._judge_server = RunServer(engine, s.judge_model, s.judge_engine_model, None, s.judge_engine_model,
                                           s.output / "engine", self.say)
        endpoint = self._judge_server.endpoint()
        settings = JudgeSettings(model=endpoint.model, base_url=f"{endpoint.base_url}/v1", repeats=s.judge_repeats,
                                 concurrency=s.judge_concurrency, rejudge_failed=s.rejudge_failed,
                                 verdict_regex=self._verdict_regex())
        return EngineJudge(settings, self._judge_key()["base_url"])

    def _verdict_regex(self) -> str | None:
        """--judge-constrain-verdict: FastChat's single-grading verdict format, enforced by the judge server."""
        if not self.settings.judge_constrain_verdict:
            return None
        from eval_harness.judges import JudgeSettings
        from eval_harness.mt_bench.judge import single_verdict_regex

        return single_verdict_regex(JudgeSettings.max_tokens)

    def _judge_key(self) -> dict[str, Any]:
        s = self.settings
        base_url = s.judge_base_url
        if s.judge_engine_model:  # the server's port changes with every start; the judge is what it serves
            from eval_harness.engines.backend import engine_identity
            from eval_harness.engines.judge import stable_endpoint

            if self._judge_engine_name is None:  # reads the engine venv's metadata: once
                self._judge_engine_name = stable_endpoint(engine_identity(s.backend), s.judge_engine_model)
            base_url = self._judge_engine_name
        key = {"model": s.judge_model, "base_url": base_url, "repeats": s.judge_repeats}
        if s.judge_constrain_verdict:  # only when set: results judged in free text keep their keys
            key["verdict_regex"] = self._verdict_regex()
        return key

    def _store_mt_bench(self, outcome: RunOutcome, summary: dict[str, Any], key: dict[str, Any], start: float,
                        prefix: str) -> None:
        """Keep an MT-Bench summary as the row's result; an incomplete one is a problem of the run."""
        run = outcome.run
        result = _mt_bench_result(run.name, summary, key, time.time() - start)
        self.store.save(result)
        outcome.results[MT_BENCH] = result
        if summary.get("complete") is False:  # shown as incomplete, never reused, and the exit status says so
            missing = f"{summary.get('missing_judgments')} of {summary.get('expected_judgments')} judgments"
            pairs = (summary.get("pairwise") or {}).get("missing")
            message = (f"incomplete: {missing} missing{f', {pairs} pairwise verdicts missing' if pairs else ''} "
                       "(the judge refused or answered unusably; see the log); no MT-Bench score is shown for it "
                       "and the next run asks for the missing ones again")
            outcome.task_errors[MT_BENCH] = message
            self.problem(f"{'reference' if run.method == REFERENCE_METHOD else 'run'} {run.name} / {MT_BENCH}: "
                         f"{message}")
            return
        if summary.get("judged") and summary.get("n_judgments") and summary.get("overall") is None:
            unjudged = (f"judged, but none of the {summary['n_judgments']} verdicts gave a usable rating "
                        f"({summary.get('parse_failures', 0)} unparsable, {summary.get('judge_errors', 0)} errors): no score")
        elif run.method == REFERENCE_METHOD:
            unjudged = "answers checked, not judged (no --judge-model)"
        else:
            unjudged = "answers written (not judged)"
        self.say(f"{prefix}: {format_metrics(MT_BENCH, result) or unjudged}")

    def _baseline_answers(self, run_name: str) -> Path | None:
        s = self.settings
        if not s.pairwise_baseline or run_name == s.pairwise_baseline:
            return None
        answers = s.output / MT_BENCH / "model_answer" / f"{s.pairwise_baseline}.jsonl"
        if not answers.exists():
            raise RuntimeError(
                f"--pairwise-baseline {s.pairwise_baseline}: its answers {answers} do not exist "
                "(did its MT-Bench answering fail?)"
            )
        return answers


def _mt_bench_result(run_name: str, summary: dict[str, Any], key: dict[str, Any], seconds: float) -> TaskResult:
    complete = summary.get("complete") is not False  # a partial score is never shown as the score
    metrics = {
        name: Metric(value=float(summary[name]) if summary.get(name) is not None and complete else None)
        for name in ("overall", "turn1", "turn2") if summary.get("judged")
    }
    return TaskResult(
        run=run_name, task=MT_BENCH, metrics=metrics,
        n_samples={"original": (summary.get("subset") or {}).get("of"), "effective": summary.get("n_questions")},
        settings=key, seconds=round(seconds, 2),
        files={k: str(summary[k]) for k in ("answers_file", "judgment_file") if summary.get(k)},
        details=summary,
    )


def _release(lm) -> None:
    """Drop a loaded model and give its (GPU) memory back before the next one loads."""
    if lm is not None:
        del lm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
    return None


def _publish_report(comparison: Comparison) -> None:
    """The leaderboard (index.html, leaderboard.md/csv, results.json), from what was just stored.

    A report that cannot be built is a problem to mention, never a reason to lose the results."""
    s = comparison.settings
    try:
        written = report.publish(s.output, formats=s.formats, runs_dir=s.runs_dir, mt_bench_dir=s.resolved_mt_bench_dir,
                                 norms=s.norms, baseline=s.baseline, resamples=s.resamples, seed=s.seed)
        comparison.say(f"report: {', '.join(str(path) for path in written.values())}")
    except Exception as exc:  # noqa: BLE001 - the evaluation results are already safe on disk
        comparison.problems.append(f"report: {type(exc).__name__}: {exc}")
        comparison.say(f"PROBLEM report not written: {type(exc).__name__}: {exc}")


def compare(settings: CompareSettings, out: TextIO | None = None, log: TextIO | None = None) -> int:
    """Run the comparison; print the summary table on ``out`` (stdout) and progress on ``log``
    (stderr); return the exit status (0: everything evaluated, 1: something was skipped or
    failed, 2: nothing to evaluate, nothing written (or the output folder is unwritable or in use
    by another compare), 130: interrupted).

    The output folder is locked for the whole run: a second compare on it stops at once, saying so."""
    out = out or sys.stdout
    comparison = Comparison(settings, log)
    refusal = comparison.nothing_to_do()
    if refusal:  # before any download and before the output dir exists
        print(f"compare: {printable(refusal, keep_newlines=True)}", file=comparison.log, flush=True)
        return 2
    try:
        lock = OutputLock(settings.output).acquire()
    except OutputUnavailable as exc:
        print(f"compare: {printable(exc, keep_newlines=True)}", file=comparison.log, flush=True)
        return 2
    comparison.say(f"output {settings.output} locked ({lock.path.name}): another compare on it is refused "
                   "until this one ends")
    try:
        return _run_and_report(comparison, out)
    finally:
        lock.release()


def _run_and_report(comparison: Comparison, out: TextIO) -> int:
    settings = comparison.settings
    try:
        status = comparison.run()
    except KeyboardInterrupt:
        comparison.problems.append("interrupted: re-run the same command to resume")
        comparison.write_report(complete=False)
        comparison.say(f"interrupted; finished results are in {settings.output} and a re-run resumes from them")
        status = 130
    except OSError as exc:  # a full disk or a folder made read-only mid-run: finished results stay as they were
        print(f"compare: cannot write to {settings.output}: {exc}; the results finished before are kept and a re-run "
              "resumes from them once the folder is writable again", file=comparison.log, flush=True)
        return 1
    try:
        table = report.write_summary(settings.output, comparison.outcomes, settings.tasks)
    except OSError as exc:
        comparison.problems.append(f"summary not written: {exc}")
        table = ""
    _publish_report(comparison)
    print(table, file=out)
    if comparison.problems:
        print(f"\n{len(comparison.problems)} problem(s):", file=out)
        for problem in comparison.problems:
            print(f"  - {printable(problem, keep_newlines=True)}", file=out)
    print(f"\nresults: {settings.output / report.RESULTS_FILE}", file=out, flush=True)
    return status
