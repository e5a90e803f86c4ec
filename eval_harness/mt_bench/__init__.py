"""MT-Bench (FastChat's llm_judge) as three functions: answer, judge, show.

``run_mt_bench`` runs them for one model; the JSONL files they hand over are FastChat's
formats, so FastChat's ``show_result.py`` reads our ``model_judgment`` folder as its own.
"""

from eval_harness.judges import Judge, JudgeError, JudgeSettings
from eval_harness.mt_bench.judge import parse_score
from eval_harness.mt_bench.run import run_mt_bench

__all__ = ["Judge", "JudgeError", "JudgeSettings", "parse_score", "run_mt_bench"]
