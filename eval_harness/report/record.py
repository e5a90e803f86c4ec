"""``results.json``: its one writer.

``compare`` hands over its record (settings, runs, results, problems) after every result, so an
interrupted run leaves a readable file; the report adds ``leaderboard``, ``statistics`` and
``report`` to the same record when it is built. Both go through :func:`write_results_json`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lisa_formats.atomic import write_json_atomic

from eval_harness.results import SCHEMA_VERSION

RESULTS_FILE = "results.json"


def write_results_json(output: Path, record: dict[str, Any]) -> Path:
    """Replace ``output/results.json`` with ``record`` (``schema_version`` set here)."""
    rest = {k: v for k, v in record.items() if k != "schema_version"}
    return write_json_atomic(Path(output) / RESULTS_FILE, {"schema_version": SCHEMA_VERSION, **rest})


def write_progress(output: Path, compare_record: dict[str, Any], complete: bool) -> Path:
    """``compare``'s record as the evaluation goes (``complete``: every run and task was tried)."""
    return write_results_json(output, {
        "generated_by": "python -m eval_harness compare",
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "complete": complete,
        **compare_record,
    })

