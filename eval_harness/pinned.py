"""Benchmark files downloaded once from a pinned commit into a cache, and checked against known hashes.

The cache is ``$EVAL_HARNESS_CACHE`` or ``~/.cache/eval_harness``. Used when no local copy is given
(``--data-dir``, ``--mt-bench-dir``), so online and offline runs read byte-identical files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("EVAL_HARNESS_CACHE") or Path.home() / ".cache" / "eval_harness")


def download(url: str, dest: Path, sha16: str, *, instead: str) -> Path:
    """``url`` into ``dest`` unless it is there; its sha256 must start with ``sha16``.

    ``instead`` says what a user without network can pass instead (named in the error)."""
    if dest.is_file():
        return dest
    import httpx

    try:
        response = httpx.get(url, timeout=60, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise RuntimeError(f"could not download {url} ({exc}); {instead}") from exc
    digest = hashlib.sha256(response.content).hexdigest()[:16]
    if digest != sha16:
        raise RuntimeError(f"{url}: sha256 starts {digest}, expected {sha16}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(dest.suffix + ".part")
    partial.write_bytes(response.content)
    partial.replace(dest)  # atomic: a half-written download is never mistaken for the file
    return dest
