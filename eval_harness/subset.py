"""``--limit N``: which N items of a benchmark are scored.

Not the first N: test files are often sorted (PubMedQA's official 500 are 276 "yes", then 169
"no", then 55 "maybe"; MT-Bench's questions come ten per category), so the first N would score one
label or one category only. Instead every stratum (a label, a category; one stratum for all when a
benchmark has none) keeps its share of the N, rounded by largest remainder, and the items within a
stratum are drawn with a generator seeded by :data:`SUBSET_SEED`. The choice depends only on the
items' strata, N and the seed, so every run of a comparison (and every later comparison on the same
data) scores the same items.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

SUBSET_SEED = 1234


@dataclass(frozen=True)
class Subset:
    """Which items were scored: ``indices`` (ascending) of ``total`` items, chosen by :func:`choose`."""

    indices: tuple[int, ...]
    total: int
    seed: int = SUBSET_SEED
    stratified_by: str | None = None  # the field the strata come from; None: drawn uniformly

    @property
    def n(self) -> int:
        return len(self.indices)

    @property
    def is_everything(self) -> bool:
        return self.n == self.total

    def describe(self) -> str:
        """"subset of 9 of 500 items (seeded, stratified by final_decision)", or "all 500 items"."""
        if self.is_everything:
            return f"all {self.total} items"
        how = f"stratified by {self.stratified_by}" if self.stratified_by else "uniform"
        return f"subset of {self.n} of {self.total} items (seed {self.seed}, {how})"

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "of": self.total, "seed": self.seed, "stratified_by": self.stratified_by,
                "description": self.describe()}


def shares(sizes: dict[Hashable, int], n: int) -> dict[Hashable, int]:
    """``n`` split over strata of ``sizes`` in proportion, by largest remainder (ties: larger stratum,
    then the stratum's order in ``sizes``); no stratum gets more than it has."""
    total = sum(sizes.values())
    exact = {key: n * size / total for key, size in sizes.items()}
    out = {key: int(value) for key, value in exact.items()}
    order = sorted(sizes, key=lambda key: (-(exact[key] - out[key]), -sizes[key], list(sizes).index(key)))
    for key in order[: n - sum(out.values())]:
        out[key] += 1
    return out


def choose(strata: Sequence[Hashable], limit: int | None, *, seed: int = SUBSET_SEED,
           stratified_by: str | None = None) -> Subset:
    """The items to score among ``len(strata)`` items whose stratum (label, category) is ``strata[i]``.

    ``limit`` None, or at least the number of items: all of them.
    """
    total = len(strata)
    if limit is not None and limit < 1:
        raise ValueError(f"limit: got {limit}; expected a positive number of items or None for all")
    if limit is None or limit >= total:
        return Subset(tuple(range(total)), total, seed, stratified_by)
    members: dict[Hashable, list[int]] = {}
    for index, stratum in enumerate(strata):
        members.setdefault(stratum, []).append(index)
    rng = random.Random(seed)
    picked: list[int] = []
    for stratum, k in shares({key: len(idx) for key, idx in members.items()}, limit).items():
        picked += rng.sample(members[stratum], k)
    return Subset(tuple(sorted(picked)), total, seed, stratified_by)
