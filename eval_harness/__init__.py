"""Compare LISA, LoRA and full fine-tuning runs: ``python -m eval_harness compare runs/``.

The pieces, by file: ``discovery`` reads Axolotl output dirs into :class:`Run` records,
``lm_eval_runner`` scores GSM8K / PubMedQA (and any lm-eval task) through lm-eval,
``mt_bench`` generates and judges MT-Bench answers, ``results`` keeps every result on disk
as it is produced, ``compare`` drives the whole evaluation and ``cli`` is the command line.
"""

from __future__ import annotations

from eval_harness.discovery import Run, TrainingFacts, discover_runs

__all__ = ["Run", "TrainingFacts", "discover_runs"]
