"""Pruning builders: keep a fraction of the samples (weight 1), prune the rest (weight 0).

Each is a pure, deterministic function of the per-sample summary (``store.sample_summary``);
the parameters' defaults live in ``store.curriculum.registry``. Every builder takes an
optional ``class_floor`` (``store.curriculum.class_floor``): each class keeps at least that
share of its proportional quota, the total kept unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from store.curriculum.class_floor import check_class_floor, class_labels, floored_selection
from store.curriculum.errors import CurriculumError
from store.curriculum.ranking import check_fraction, fraction_count, hardness_order, keep_positions
from store.scores import hardness


def select(summary: pd.DataFrame, preference: np.ndarray, budget: int, class_floor: float | None) -> pd.DataFrame:
    """Keep ``budget`` samples, most preferred first, with ``class_floor`` (None: no floor)."""
    check_class_floor(class_floor)
    labels = class_labels(summary) if class_floor else np.zeros(len(summary))
    return keep_positions(summary, floored_selection(labels, preference, budget, class_floor))


def keep_easy(summary: pd.DataFrame, score: str, keep: float, class_floor: float | None) -> pd.DataFrame:
    """Keep the ``keep`` fraction of easiest samples by ``score`` (weight 1), prune the rest."""
    check_fraction("keep", keep)
    return select(summary, hardness_order(summary, score), fraction_count(keep, len(summary)), class_floor)


def keep_hard(summary: pd.DataFrame, score: str, keep: float, class_floor: float | None) -> pd.DataFrame:
    """Keep the ``keep`` fraction of hardest samples (Paul et al. 2021; collapses when data
    is scarce, Sorscher et al. 2022: compare with keep-easy and random)."""
    check_fraction("keep", keep)
    hardest_first = hardness_order(summary, score)[::-1]
    return select(summary, hardest_first, fraction_count(keep, len(summary)), class_floor)


def keep_random(summary: pd.DataFrame, keep: float, seed: int, class_floor: float | None) -> pd.DataFrame:
    """Keep a uniformly random ``keep`` fraction (seeded; the baseline every pruning needs)."""
    check_fraction("keep", keep)
    rng = np.random.default_rng(seed)
    return select(summary, rng.permutation(len(summary)), fraction_count(keep, len(summary)), class_floor)


def keep_offset(summary: pd.DataFrame, score: str, keep: float, skip: float,
                class_floor: float | None) -> pd.DataFrame:
    """Skip the ``skip`` fraction of easiest samples, keep the next ``keep`` fraction (the
    Data Diet offset window, Paul et al. 2021: drops the hardest too, which are often
    mislabeled). With a class floor, a class short of its minimum takes its samples nearest
    the window: harder ones first, then the skipped easy ones (hardest of them first)."""
    check_fraction("keep", keep)
    check_fraction("skip", skip, low_open=False, high_closed=False)
    n = len(summary)
    start = fraction_count(skip, n)
    k = fraction_count(keep, n)
    if start + k > n:
        raise CurriculumError(f"skip + keep must be <= 1, got {skip} + {keep}")
    order = hardness_order(summary, score)
    return select(summary, np.concatenate([order[start:], order[:start][::-1]]), k, class_floor)


def keep_stratified(summary: pd.DataFrame, score: str, keep: float, bins: int, seed: int,
                    class_floor: float | None) -> pd.DataFrame:
    """Coverage-balanced selection (Zheng et al. 2023, CCS): split the score's range into
    ``bins`` equal-width bins and spend the budget evenly over them, smallest bins first
    (a bin with fewer samples than its share gives the remainder to the others); within a
    bin samples are drawn at random (seeded). NaN scores form a bin of their own."""
    check_fraction("keep", keep)
    if bins < 1:
        raise CurriculumError(f"bins must be a positive integer, got {bins}")
    n = len(summary)
    key = hardness(summary, score).to_numpy(float)
    finite = np.isfinite(key)
    bin_of = np.full(n, bins, dtype=np.int64)  # the extra bin: NaN / inf
    if finite.any():
        low, high = key[finite].min(), key[finite].max()
        width = (high - low) / bins if high > low else 1.0
        bin_of[finite] = np.minimum(((key[finite] - low) / width).astype(np.int64), bins - 1)
    groups = [np.flatnonzero(bin_of == b) for b in range(bins + 1)]
    groups = [g for g in groups if len(g)]
    budget = fraction_count(keep, n)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for index, group in enumerate(sorted(groups, key=len)):
        share = budget // (len(groups) - index)
        take = min(len(group), share)
        chosen.append(rng.permutation(group)[:take])
        budget -= take
    picked = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    others = np.setdiff1d(np.arange(n), picked)
    return select(summary, np.concatenate([picked, rng.permutation(others)]), len(picked), class_floor)
