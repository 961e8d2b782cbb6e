"""Pacing: which samples are available from which epoch (Hacohen & Weinshall 2019).

The pacing function gives the fraction of the data available at an epoch; the builders
turn it into a ``start_epoch`` (and ``stage``) per sample by hardness rank. Self-paced
learning (Kumar et al. 2010) re-ranks by the current loss while training
(``training.curriculum_run``); here it fixes epoch 0. Defaults live in
``store.curriculum.registry``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from store.curriculum.errors import CurriculumError
from store.curriculum.ranking import check_fraction, hardness_order, weight_frame

PACINGS = ("linear", "root", "geometric", "step")


def check_pacing(pacing: str, r0: float, duration: int, stages: int, power: float) -> None:
    """Refuse parameters ``pacing_fraction`` cannot use (``power`` only matters for root,
    ``stages`` only for step)."""
    if pacing not in PACINGS:
        raise CurriculumError(f"unknown pacing {pacing!r}; expected one of {', '.join(PACINGS)}")
    check_fraction("r0", r0)
    if duration < 1:
        raise CurriculumError(f"duration must be a positive number of epochs, got {duration}")
    if pacing == "root" and not power > 0:
        raise CurriculumError(f"power must be > 0, got {power}")
    if pacing == "step" and stages < 1:
        raise CurriculumError(f"stages must be a positive integer, got {stages}")


def pacing_fraction(
    epoch: int | np.ndarray,
    pacing: str,
    r0: float,
    duration: int,
    stages: int,
    power: float,
) -> np.ndarray:
    """Fraction of the data available at ``epoch`` (Hacohen & Weinshall 2019): grows from
    ``r0`` at epoch 0 to 1 at epoch ``duration`` (x = epoch / duration, clipped to 1):

    linear r0 + (1 - r0) x; root (r0^p + (1 - r0^p) x)^(1/p); geometric r0^(1 - x);
    step r0 + (1 - r0) floor(stages x) / stages.
    """
    check_pacing(pacing, r0, duration, stages, power)
    x = np.clip(np.asarray(epoch, dtype=float) / duration, 0.0, 1.0)
    if pacing == "linear":
        value = r0 + (1 - r0) * x
    elif pacing == "root":
        value = (r0**power + (1 - r0**power) * x) ** (1.0 / power)
    elif pacing == "geometric":
        value = r0 ** (1.0 - x)
    else:
        value = r0 + (1 - r0) * np.floor(stages * x + 1e-9) / stages
    return np.clip(value, r0, 1.0)


def available_count(epoch: int, n: int, **pacing: Any) -> int:
    """How many samples are available at ``epoch`` (ceil of fraction * n); ``pacing``:
    the keyword arguments of ``pacing_fraction``."""
    return int(min(n, math.ceil(float(pacing_fraction(epoch, **pacing)) * n - 1e-9)))


def paced_table(summary: pd.DataFrame, order: np.ndarray, pacing: str, r0: float, duration: int,
                stages: int, power: float) -> pd.DataFrame:
    """Weight 1 for all; ``start_epoch``: the first epoch whose available count covers
    the sample's position in ``order``; ``stage``: the rank of its start epoch."""
    check_pacing(pacing, r0, duration, stages, power)  # a duration < 1 would leave the loop below empty
    n = len(summary)
    start = np.zeros(n, dtype=np.int64)
    previous = 0
    kw = dict(pacing=pacing, r0=r0, duration=duration, stages=stages, power=power)
    for epoch in range(duration + 1):
        count = available_count(epoch, n, **kw)
        start[order[previous:count]] = epoch
        previous = max(previous, count)
    _, stage = np.unique(start, return_inverse=True)
    return weight_frame(summary, np.ones(n), start_epoch=start, stage=stage.astype(np.int64))


def easy_to_hard(summary: pd.DataFrame, score: str, pacing: str, r0: float, duration: int,
                 stages: int, power: float) -> pd.DataFrame:
    """Curriculum: the easiest samples first; each sample's ``start_epoch`` is the first
    epoch whose pacing fraction covers its easiness rank. Batches are drawn from the
    available pool; the number of steps per epoch stays that of the full data."""
    return paced_table(summary, hardness_order(summary, score), pacing, r0, duration, stages, power)


def anti_curriculum(summary: pd.DataFrame, score: str, pacing: str, r0: float, duration: int,
                    stages: int, power: float) -> pd.DataFrame:
    """Anti-curriculum: hardest first, same pacing."""
    return paced_table(summary, hardness_order(summary, score)[::-1], pacing, r0, duration, stages, power)


def self_paced(summary: pd.DataFrame, score: str, pacing: str, r0: float, duration: int,
               stages: int, power: float) -> pd.DataFrame:
    """Self-paced learning (Kumar et al. 2010), online: at each epoch the samples whose
    latest training loss is among the lowest ``pacing_fraction(epoch)`` are trained on
    (the loss threshold grows with the pacing function). Samples not seen yet rank by the
    source run's score, which also fixes epoch 0 (``start_epoch`` as easy-to-hard)."""
    return easy_to_hard(summary, score, pacing, r0, duration, stages, power)
