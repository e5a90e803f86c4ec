"""Task YAMLs: lm-eval's stock ones (by default) and our named variants beside this file.

The variants' YAMLs are data, not code; their preprocess functions are in ``utils.py``.
"""

from __future__ import annotations

from pathlib import Path

TASK_DIR = Path(__file__).resolve().parent


def stock_task_yaml(relative: str) -> Path:
    """The YAML of an lm-eval stock task, e.g. ``"gsm8k/gsm8k.yaml"``, in the installed lm-eval."""
    import lm_eval.tasks

    path = Path(lm_eval.tasks.__file__).resolve().parent / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the installed lm-eval (expected lm-eval 0.4.11's task {relative})")
    return path
