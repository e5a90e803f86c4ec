"""``run_resources.json`` (``lisa_resources/1``): what a training run cost, measured from outside.

``lisa-plugin train`` (and the demo, through the same runner) starts ``axolotl train`` as a
child process and writes this file into the run's ``output_dir`` when it ends::

    {
      "schema": "lisa_resources/1",
      "peak_rss_bytes": 1234567890,   # peak resident memory of the training process tree, or null
      "peak_gpu_bytes": null,         # the trainer logs GPU memory itself; null when not measured here
      "wall_s": 312.4,
      "command": ["axolotl", "train", "config.yml"],
      "exit_code": 0
    }

The report uses it for a run's peak memory when the trainer logged none (on CPU it logs zeros).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from lisa_formats.atomic import write_json_atomic
from lisa_formats.jsonl import read_json_file

RESOURCES_FILE = "run_resources.json"
SCHEMA = "lisa_resources/1"


@dataclass(frozen=True)
class RunResources:
    peak_rss_bytes: int | None
    peak_gpu_bytes: int | None
    wall_s: float
    command: list[str]
    exit_code: int
    schema: str = SCHEMA


def write_resources(output_dir: str | os.PathLike, *, peak_rss_bytes: int | None, peak_gpu_bytes: int | None,
                    wall_s: float, command: list[str], exit_code: int) -> Path:
    """Write ``output_dir/run_resources.json`` all at once; return its path."""
    record = RunResources(peak_rss_bytes=peak_rss_bytes, peak_gpu_bytes=peak_gpu_bytes, wall_s=float(wall_s),
                          command=[str(part) for part in command], exit_code=int(exit_code))
    data = asdict(record)
    data = {"schema": data.pop("schema"), **data}
    return write_json_atomic(Path(output_dir) / RESOURCES_FILE, data)


def _optional_int(data: dict, key: str, path: Path) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{path}: {key!r} must be a non-negative integer or null, got {value!r}")
    return value


def _parse(data: object, path: Path) -> RunResources:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: not a {SCHEMA} record (schema={found!r})")
    wall_s, command, exit_code = data.get("wall_s"), data.get("command"), data.get("exit_code")
    if isinstance(wall_s, bool) or not isinstance(wall_s, (int, float)) or wall_s < 0:
        raise ValueError(f"{path}: 'wall_s' must be a non-negative number of seconds, got {wall_s!r}")
    if not isinstance(command, list) or not all(isinstance(part, str) for part in command):
        raise ValueError(f"{path}: 'command' must be a list of strings, got {command!r}")
    if isinstance(exit_code, bool) or not isinstance(exit_code, int):
        raise ValueError(f"{path}: 'exit_code' must be an integer, got {exit_code!r}")
    return RunResources(peak_rss_bytes=_optional_int(data, "peak_rss_bytes", path),
                        peak_gpu_bytes=_optional_int(data, "peak_gpu_bytes", path),
                        wall_s=float(wall_s), command=list(command), exit_code=exit_code)


def read_resources(output_dir: str | os.PathLike) -> RunResources | None:
    """The record in ``output_dir`` (or at that file path); None when there is none.

    A file that is there but unreadable raises ``ValueError`` naming it.
    """
    path = Path(output_dir)
    if path.is_dir() or not path.name.endswith(".json"):
        path = path / RESOURCES_FILE
    data = read_json_file(path, f"{SCHEMA} JSON")
    return None if data is None else _parse(data, path)
