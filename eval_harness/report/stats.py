"""Bootstrap statistics for the leaderboard: how sure each number is, and whether a gap is real.

Everything is resampled from one explicit seed (``numpy.random.default_rng(seed)``), so a report
rebuilt from the same results shows the same intervals. MT-Bench is resampled over questions
(the unit that was sampled from the space of prompts), GSM8K and PubMedQA over their items.
A comparison of two runs is *paired*: the same resampled questions/items score both runs, which
removes the between-question variance that an unpaired test would wrongly count.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
CONFIDENCE = 0.95


@dataclass
class Interval:
    low: float | None
    high: float | None
    resamples: int
    seed: int
    confidence: float = CONFIDENCE


@dataclass
class PairedTest:
    """Run ``a`` minus run ``b`` on one benchmark, over the items both were scored on."""

    benchmark: str
    a: str
    b: str
    n: int
    diff: float | None
    low: float | None
    high: float | None
    p_value: float | None
    resamples: int
    seed: int

    @property
    def significant(self) -> bool:
        """The 95% interval of the difference excludes 0."""
        return self.low is not None and (self.low > 0 or self.high < 0)

    def to_json(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` rows of ``n`` indices drawn with replacement from ``range(n)``."""
    if resamples < 1:
        raise ValueError(f"resamples: {resamples}; expected at least 1")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None, None
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def mt_bench_overall(turn1: np.ndarray, turn2: np.ndarray) -> float | None:
    """MT-Bench's overall score as FastChat's show_result.py computes it: the mean of every valid
    turn rating (NaN = not judged, unparsable or an error). Not the mean of the two turn means,
    which differs when one turn has more valid ratings than the other."""
    turn1, turn2 = np.asarray(turn1, float), np.asarray(turn2, float)
    if np.isnan(turn1).all() or np.isnan(turn2).all():
        return None
    return float(np.nanmean(np.concatenate([turn1.ravel(), turn2.ravel()])))


def bootstrap_mt_bench(turn1: np.ndarray, turn2: np.ndarray, resamples: int = DEFAULT_RESAMPLES,
                       seed: int = DEFAULT_SEED, confidence: float = CONFIDENCE) -> Interval:
    """Percentile interval of :func:`mt_bench_overall` over questions resampled with replacement.

    ``turn1[i]``/``turn2[i]`` are question i's turn scores: one number each (mean over judge
    repeats), or a row of one rating per judge repeat (shape ``(questions, repeats)``, NaN where
    none; :func:`eval_harness.mt_bench.show.repeat_scores`). With rows, each resampled question
    also draws its repeats with replacement, so the interval includes the judge's run-to-run spread.
    """
    turn1, turn2 = np.asarray(turn1, float), np.asarray(turn2, float)
    if turn1.shape != turn2.shape or turn1.ndim not in (1, 2):
        raise ValueError(f"turn1 has {turn1.shape} scores, turn2 {turn2.shape}; expected one of each per question "
                         "(or one row of judge repeats each)")
    if turn1.size == 0:
        return Interval(None, None, resamples, seed, confidence)
    scores = np.stack([turn1, turn2], axis=1)  # (questions, 2) or (questions, 2, repeats)
    idx = resample_indices(scores.shape[0], resamples, seed)
    picked = scores[idx]  # (resamples, questions, 2[, repeats])
    if scores.ndim == 3 and scores.shape[2] > 1:
        draws = np.random.default_rng([seed, 1]).integers(0, scores.shape[2], size=picked.shape)
        picked = np.take_along_axis(picked, draws, axis=3)
    with warnings.catch_warnings():  # a resample of only unparsable verdicts is NaN, and dropped
        warnings.simplefilter("ignore", RuntimeWarning)
        overall = np.nanmean(picked.reshape(resamples, -1), axis=1)
    return Interval(*_percentiles(overall, confidence), resamples, seed, confidence)


def paired_bootstrap(benchmark: str, a: str, b: str, scores_a: dict, scores_b: dict,
                     resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                     confidence: float = CONFIDENCE) -> PairedTest:
    """Mean difference ``a - b`` over the items scored for both, with a paired percentile interval.

    ``scores_*`` map an item id (question id, lm-eval doc id) to its score; NaN/None items are left
    out. The p-value is the two-sided bootstrap one: twice the share of resampled means on the
    other side of 0.
    """
    common = sorted(k for k in scores_a.keys() & scores_b.keys()
                    if scores_a[k] is not None and scores_b[k] is not None
                    and not np.isnan(scores_a[k]) and not np.isnan(scores_b[k]))
    if not common:
        return PairedTest(benchmark, a, b, 0, None, None, None, None, resamples, seed)
    diff = np.array([scores_a[k] - scores_b[k] for k in common], float)
    means = diff[resample_indices(diff.size, resamples, seed)].mean(axis=1)
    low, high = _percentiles(means, confidence)
    p_value = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    return PairedTest(benchmark, a, b, diff.size, float(diff.mean()), low, high, p_value, resamples, seed)
