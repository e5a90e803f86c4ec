"""Benchmarks by name: what each one scores with, shows, and reads (see :mod:`.registry`).

Built in: ``gsm8k``, ``pubmedqa`` (lm-eval tasks with our YAMLs) and ``mt_bench`` (answered and
judged by :mod:`eval_harness.mt_bench`). Any other name is a stock lm-eval task or group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from eval_harness.benchmarks.registry import (
    MT_BENCH,
    Benchmark,
    DataError,
    Headline,
    Prepared,
    benchmark_for,
    generic,
    get_benchmark,
    register_benchmark,
    registered,
)

# Importing a built-in module registers it; the order is the order of DEFAULT_TASKS and of the report.
from eval_harness.benchmarks import mt_bench, gsm8k, pubmedqa  # noqa: E402,F401  isort: skip

DEFAULT_TASKS = (MT_BENCH, "gsm8k", "pubmedqa")
DEMO_TEST_ITEMS = 200

__all__ = [
    "DEFAULT_TASKS", "MT_BENCH", "Benchmark", "DataError", "Headline", "Prepared", "benchmark_for", "generic",
    "get_benchmark", "register_benchmark", "registered", "write_demo_data",
]


def write_demo_data(data_dir: Path, sizes: Mapping[str, int] | None = None, names: list[str] | None = None) -> Path:
    """Made-up items of every registered benchmark with a demo generator, in the ``--data-dir`` layout.

    ``sizes``: test items per benchmark (default :data:`DEMO_TEST_ITEMS`); ``names``: only these.
    Returns ``data_dir``.
    """
    sizes = dict(sizes or {})
    for name in names or registered():
        benchmark = get_benchmark(name)
        if benchmark.demo_data is not None:
            benchmark.demo_data(Path(data_dir), sizes.get(name, DEMO_TEST_ITEMS))
    return Path(data_dir)
