"""What every builder shares: hardness ranks, counts, parameter checks, the output frame.

A builder's output is one row per sample, sorted by ``sample_id``: ``sample_id, weight``
(``weight`` 0 = pruned) and, for pacing, ``start_epoch, stage``. Hardness comes from
``store.scores`` (the direction of each score lives on its spec there).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from store.curriculum.errors import CurriculumError
from store.scores import hardness


def hardness_order(summary: pd.DataFrame, score: str) -> np.ndarray:
    """Positions of ``summary`` from easiest to hardest (stable; NaN scores are hardest)."""
    key = hardness(summary, score).to_numpy(float)
    key = np.where(np.isnan(key), np.inf, key)
    return np.argsort(key, kind="stable")


def hardness_percentile(summary: pd.DataFrame, score: str) -> np.ndarray:
    """Hardness percentile per sample: 0 for the easiest, 1 for the hardest (by rank)."""
    n = len(summary)
    order = hardness_order(summary, score)
    ranks = np.empty(n, dtype=float)
    ranks[order] = np.arange(n)
    return ranks / max(n - 1, 1)


def fraction_count(fraction: float, n: int) -> int:
    """``round(fraction * n)``, clipped to ``[0, n]``."""
    return int(min(n, max(0, round(fraction * n))))


def check_fraction(name: str, value: float, low_open: bool = True, high_closed: bool = True) -> None:
    """Refuse ``value`` outside ``(0, 1]`` (or the interval the flags say), naming ``name``."""
    ok_low = value > 0 if low_open else value >= 0
    ok_high = value <= 1 if high_closed else value < 1
    if not (ok_low and ok_high) or not math.isfinite(value):
        interval = f"{'(' if low_open else '['}0, 1{']' if high_closed else ')'}"
        raise CurriculumError(f"{name} must be in {interval}, got {value}")


def weight_frame(summary: pd.DataFrame, weight: np.ndarray, **extra: np.ndarray) -> pd.DataFrame:
    """The builder output: ``sample_id, weight[, extra columns]``, sorted by ``sample_id``."""
    frame = pd.DataFrame({"sample_id": summary["sample_id"].to_numpy(np.int64), "weight": np.asarray(weight, float)})
    for name, values in extra.items():
        frame[name] = np.asarray(values)
    return frame.sort_values("sample_id", kind="stable").reset_index(drop=True)


def keep_positions(summary: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """Weight 1 at ``positions`` of ``summary``, 0 (pruned) elsewhere."""
    weight = np.zeros(len(summary))
    weight[positions] = 1.0
    return weight_frame(summary, weight)
