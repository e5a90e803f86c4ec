"""lm-eval task YAMLs (data, not code) and their preprocess functions in ``utils.py``."""
