"""The benchmark registry: one small record per benchmark, looked up by the name users type.

A benchmark module builds a :class:`Benchmark` and passes it to :func:`register_benchmark`
(``eval_harness.benchmarks`` imports the built-in modules, so they register on import). A name
nobody registered is taken for a stock lm-eval task and gets a :func:`generic` record, so
``--tasks arc_easy`` works with no module at all. Adding MMLU with its own headline columns,
few-shot default and local data is one new module beside ``gsm8k.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lisa_formats.suggest import unknown

MT_BENCH = "mt_bench"
# Seeds of the demo generators' disjoint pools: test items are never seen in training.
DEMO_TRAIN_SEED, DEMO_TEST_SEED = 1, 2


class UnknownBenchmarkError(LookupError):
    """No benchmark of that name is registered; the message lists the close and the available ones."""


class DataError(Exception):
    """A benchmark file is missing or not in the expected shape; the message names it."""


@dataclass(frozen=True)
class Headline:
    """One number the leaderboard shows for a benchmark (lm-eval's ``higher_is_better`` travels with it)."""

    title: str  # column title, e.g. "GSM8K strict %"
    metric: str  # lm-eval's "metric,filter" (or our own key); "" = the first metric reported
    higher_is_better: bool = True
    percent: bool = True  # a 0-1 fraction shown as a percentage; False: a score shown as it is


@dataclass(frozen=True)
class Prepared:
    """What :attr:`Benchmark.prepare` made of the data: the task YAML's overrides and a data label."""

    overrides: dict[str, Any] | None  # keys of a YAML that ``include:``s a task file; None: lm-eval's own task
    data: str  # where the items come from, for the cache key and the report ("local:DIR", "hub:ID")
    files: tuple[Path, ...] = ()  # the data files the task reads: their content hashes go into the cache key


STOCK = "stock"


@dataclass(frozen=True)
class Variant:
    """A named way of scoring a benchmark that differs from lm-eval's stock task, opted into with
    ``--variant BENCHMARK=NAME``; ``why`` says what differs and why one would want it."""

    name: str
    why: str
    fewshot: int | None = None  # its own few-shot default (None: the benchmark's)


# (work_dir, data_dir, variant) -> Prepared: work_dir is this report's folder for converted files,
# data_dir the --data-dir (None: online), variant a name from Benchmark.variants or STOCK
PrepareData = Callable[[Path, "Path | None", str], Prepared]
# (folder, number of test items) -> None: writes made-up items in the --data-dir layout
WriteDemoData = Callable[[Path, int], None]


@dataclass(frozen=True)
class Benchmark:
    name: str  # what --tasks says
    lm_eval_task: str | None  # the lm-eval task (or group) that scores it; None: scored by our own code
    headlines: tuple[Headline, ...]
    fewshot: int | None = None  # None: the task's own default
    prepare: PrepareData | None = None  # None: lm-eval reads its own data
    demo_data: WriteDemoData | None = None
    description: str = ""
    variants: tuple[Variant, ...] = ()  # besides STOCK, lm-eval's own task (the default)
    stratify_by: str | None = None  # the item field --limit keeps the proportions of (None: uniform)
    max_new_tokens: int | None = None  # None: the task's own (lm-eval tasks); else this benchmark's default

    @property
    def uses_lm_eval(self) -> bool:
        return self.lm_eval_task is not None

    def variant(self, name: str) -> Variant | None:
        """The variant ``name`` (None for STOCK); "Unknown variant ..." with the close names otherwise."""
        if name == STOCK:
            return None
        by_name = {v.name: v for v in self.variants}
        if name not in by_name:
            raise UnknownBenchmarkError(unknown(f"variant of {self.name}", name, [STOCK, *by_name]))
        return by_name[name]

    def default_fewshot(self, variant: str = STOCK) -> int | None:
        chosen = self.variant(variant)
        return chosen.fewshot if chosen is not None and chosen.fewshot is not None else self.fewshot

    def prepare_data(self, work_dir: Path, data_dir: Path | None, variant: str = STOCK) -> Prepared:
        self.variant(variant)
        if self.prepare is None:
            return Prepared(None, "lm-eval default")
        return self.prepare(work_dir, data_dir, variant)


_REGISTRY: dict[str, Benchmark] = {}


def register_benchmark(benchmark: Benchmark) -> Benchmark:
    """Add ``benchmark`` under its name (a second one with the same name is an error)."""
    if benchmark.name in _REGISTRY and _REGISTRY[benchmark.name] is not benchmark:
        raise ValueError(f"benchmark {benchmark.name!r} is registered twice")
    _REGISTRY[benchmark.name] = benchmark
    return benchmark


def registered() -> list[str]:
    """The registered names, in registration order."""
    _load_builtins()
    return list(_REGISTRY)


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark ``name``; "Unknown benchmark 'x'. Did you mean ...? Available: ..." otherwise."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownBenchmarkError(unknown("benchmark", name, _REGISTRY)) from None


def benchmark_for(name: str) -> Benchmark:
    """The registered benchmark ``name``, or a generic record for an lm-eval task of that name."""
    _load_builtins()
    return _REGISTRY.get(name) or generic(name)


def generic(task: str) -> Benchmark:
    """Any lm-eval task (or group) by its own name: its first reported metric is the headline."""
    return Benchmark(name=task, lm_eval_task=task, headlines=(Headline(f"{task} %", ""),))


def _load_builtins() -> None:
    import eval_harness.benchmarks  # noqa: F401  (imports the built-in modules, which register)
