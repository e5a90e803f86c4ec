"""Writes that a crash, Ctrl-C or a full disk can interrupt without leaving half a file.

The text goes to a temporary file beside the target, is flushed and fsynced, and is then
renamed over the target (``os.replace`` is atomic on POSIX and Windows), after which the
directory is fsynced so the rename itself survives a power cut. The file gets the mode a
plain ``open(path, "w")`` would give it (0666 less the umask), not ``mkstemp``'s 0600, so
teammates can read results and histories written by a shared job.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable


def _current_umask() -> int:
    # os.umask both sets and returns: set it back at once (no thread-safe getter exists
    # before Python 3.13's os.process_umask-free alternatives; this is what pip does).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported (e.g. Windows): the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` with ``data`` all at once; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = (path.stat().st_mode & 0o777) if path.exists() else (0o666 & ~_current_umask())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) all at once."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Replace ``path`` with ``data`` as indented JSON (non-JSON values through ``str``)."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[Any]) -> Path:
    """Replace ``path`` with one JSON object per line (see :mod:`lisa_formats.jsonl` to append)."""
    # ASCII escapes keep U+2028/U+0085 inside strings from reading as line breaks to str.splitlines()
    return write_text_atomic(path, "".join(json.dumps(r, default=str) + "\n" for r in records))
