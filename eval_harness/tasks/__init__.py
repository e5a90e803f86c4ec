"""lm-eval task YAMLs (data, not code) and their preprocess functions in ``utils.py``."""

from pathlib import Path

TASK_DIR = Path(__file__).resolve().parent
