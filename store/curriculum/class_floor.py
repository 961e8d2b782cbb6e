"""A per-class floor for the prune strategies: no class loses more than its share allows.

Pruning by a score can empty a class (the easiest half of a dataset is rarely half of
every class). With ``class_floor`` f in [0, 1], every class c of n_c samples keeps at
least ``floor(f * keep * n_c)`` of them, where ``keep`` is the kept fraction of the
whole dataset: f = 0 is no floor, f = 1 keeps every class at (at least) its
proportional share, a class-stratified selection. The budget (how many are kept in all)
does not change: each class first gets its floor, taken from its own most preferred
samples (the builder's order: easiest first for keep-easy, a seeded permutation for
random, ...); the rest of the budget goes to the most preferred samples left, whatever
their class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from store.curriculum.errors import CurriculumError


def check_class_floor(class_floor: float | None) -> None:
    """Refuse a floor outside [0, 1]."""
    if class_floor is not None and not 0 <= class_floor <= 1:
        raise CurriculumError(f"class_floor must be in [0, 1] (0: no floor, 1: class-stratified), got {class_floor}")


def class_labels(summary: pd.DataFrame) -> np.ndarray:
    """The class label of every sample, or an error when some have none."""
    if "label" not in summary or summary["label"].isna().any():
        raise CurriculumError("class_floor needs the class label of every sample "
                              "(runs of sequences or per-sample losses record none); leave class_floor unset")
    return summary["label"].to_numpy()


def class_minimums(labels: np.ndarray, budget: int, class_floor: float) -> dict[object, int]:
    """``floor(class_floor * budget / N * n_c)`` for every class c (budget / N = the kept fraction)."""
    classes, counts = np.unique(labels, return_counts=True)
    fraction = budget / max(len(labels), 1)
    return {c: int(np.floor(class_floor * fraction * n + 1e-9)) for c, n in zip(classes.tolist(), counts.tolist())}


def floored_selection(labels: np.ndarray, preference: np.ndarray, budget: int, class_floor: float | None) -> np.ndarray:
    """Positions to keep: ``budget`` of them, each class at least its minimum (``class_minimums``).

    ``preference`` lists every position, most preferred first. Without a floor (None or 0)
    this is simply ``preference[:budget]``.
    """
    preference = np.asarray(preference, dtype=np.int64)
    if not class_floor:
        return preference[:budget]
    check_class_floor(class_floor)
    minimums = class_minimums(labels, budget, class_floor)
    chosen = np.zeros(len(labels), dtype=bool)
    ordered_labels = labels[preference]
    for label, minimum in minimums.items():
        if minimum:
            chosen[preference[ordered_labels == label][:minimum]] = True
    rest = budget - int(chosen.sum())
    if rest > 0:
        chosen[preference[~chosen[preference]][:rest]] = True
    return np.flatnonzero(chosen)
