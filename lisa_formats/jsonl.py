"""Append-only JSONL files that survive being killed mid-write (answers, judgments, samples).

Every stage appends one record per line and flushes it at once, so a SIGKILL loses at
most the record in flight; a torn last line left by such a kill is skipped on reading
(and a later append starts on a fresh line instead of gluing onto it).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Iterable, Iterator

logger = logging.getLogger(__name__)


def read_jsonl(path: Path) -> list[dict]:
    """All complete records of ``path`` ([] when it does not exist)."""
    return list(_iter_records(Path(path)))


def _iter_records(path: Path) -> Iterator[dict]:
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            is_last = all(not rest.strip() for rest in lines[number:])
            if is_last:
                logger.warning("%s: skipping torn last line %d (an interrupted write): %s", path, number, exc)
                continue
            raise ValueError(f"{path}: line {number} is not JSON ({exc}); expected one JSON object per line") from exc
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number} is {type(record).__name__}; expected a JSON object")
        yield record


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (a write cut short by a kill), so appends stay readable."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        content = fh.read()
        keep = content.rfind(b"\n") + 1
        logger.warning("%s: dropping a torn last line of %d bytes (an interrupted write)", path, len(content) - keep)
        fh.truncate(keep)


class JsonlAppender:
    """Thread-safe appender: one ``write`` is one line, flushed and fsynced before returning."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(self.path)
        self._lock = threading.Lock()
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def write_all(self, records: Iterable[dict]) -> None:
        for record in records:
            self.write(record)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_json_file(path: Path, what: str) -> object | None:
    """The JSON value in ``path``, or None when there is no such file; unreadable JSON raises
    ``ValueError`` naming the file and ``what`` it should have been."""
    if not path.is_file():
        return None
    from lisa_formats.userfiles import read_user_bytes

    try:
        return json.loads(read_user_bytes(path).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: bad JSON, or a FIFO/huge file
        raise ValueError(f"{path}: not readable as {what} ({exc})") from None
