"""Reweighting builders: every sample stays, its loss is multiplied by its weight.

Pure functions of the per-sample summary; the parameters' defaults live in
``store.curriculum.registry``, which also maps ``downweight-noise --mode hard|soft`` to
``downweight_noise_hard`` / ``downweight_noise_soft``. Noise scores: AUM (Pleiss et al.
2020), EL2N and forgetting (Paul et al. 2021, Toneva et al. 2019), cartography regions
(Swayamdipta et al. 2020).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from store.curriculum.errors import CurriculumError
from store.curriculum.ranking import (
    check_fraction,
    fraction_count,
    hardness_order,
    hardness_percentile,
    weight_frame,
)
from store.scores import SCORES, cartography_region

#: pseudo-score for downweight-noise: the cartography hard-to-learn region
CARTOGRAPHY = "cartography"
#: why soft down-weighting refused its inputs (a cartography region or a threshold)
SOFT_NEEDS_FRACTION = "soft down-weighting needs a score and fraction (not threshold)"


def upweight_hard(summary: pd.DataFrame, score: str, alpha: float) -> pd.DataFrame:
    """weight = 1 + alpha * q, q the hardness percentile (0 easiest, 1 hardest), then
    rescaled to mean 1 so the loss keeps its scale."""
    if not alpha >= 0:
        raise CurriculumError(f"alpha must be >= 0, got {alpha}")
    weight = 1.0 + alpha * hardness_percentile(summary, score)
    return weight_frame(summary, weight / weight.mean())


def hard_to_learn(summary: pd.DataFrame) -> np.ndarray:
    """Mask of the cartography hard-to-learn region (low confidence, low variability;
    store.scores cut-offs)."""
    region = cartography_region(summary["confidence"], summary["variability"])
    return (region == "hard-to-learn").to_numpy()


def hardest_fraction(summary: pd.DataFrame, score: str, fraction: float) -> np.ndarray:
    """Mask of the hardest ``fraction`` of the samples by ``score``."""
    check_fraction("fraction", fraction, low_open=False)
    k = fraction_count(fraction, len(summary))
    mask = np.zeros(len(summary), dtype=bool)
    mask[hardness_order(summary, score)[len(summary) - k:]] = True
    return mask


def beyond_threshold(summary: pd.DataFrame, score: str, threshold: float) -> np.ndarray:
    """Mask of the samples at or beyond ``threshold`` in the score's hard direction
    (aum <= 0, loss >= 2); never-learned samples too where the score ranks them hardest."""
    spec = SCORES[score]
    values = summary[score].to_numpy(float)
    with np.errstate(invalid="ignore"):
        mask = values >= threshold if spec.higher_is_harder else values <= threshold
    if spec.never_learned_hardest and "never_learned" in summary:
        mask |= summary["never_learned"].fillna(False).to_numpy(bool)
    return mask


def suspected_noise(
    summary: pd.DataFrame,
    score: str,
    fraction: float | None,
    threshold: float | None,
) -> np.ndarray:
    """Boolean mask of samples suspected to be mislabeled.

    ``score="cartography"``: the hard-to-learn region (``hard_to_learn``). Otherwise
    exactly one of ``fraction`` (``hardest_fraction``) and ``threshold``
    (``beyond_threshold``) is given.
    """
    if score == CARTOGRAPHY:
        return hard_to_learn(summary)
    if (fraction is None) == (threshold is None):
        raise CurriculumError("downweight-noise needs exactly one of fraction or threshold")
    if fraction is not None:
        return hardest_fraction(summary, score, fraction)
    return beyond_threshold(summary, score, threshold)


def check_floor(floor: float) -> None:
    if not 0 <= floor <= 1:
        raise CurriculumError(f"floor must be in [0, 1], got {floor}")


def downweight_noise_hard(
    summary: pd.DataFrame,
    score: str,
    fraction: float | None,
    threshold: float | None,
    floor: float,
) -> pd.DataFrame:
    """Down-weight suspected label noise: suspected samples (``suspected_noise``) get
    weight ``floor`` (0 prunes them), the others 1."""
    check_floor(floor)
    mask = suspected_noise(summary, score, fraction, threshold)
    return weight_frame(summary, np.where(mask, floor, 1.0))


def downweight_noise_soft(
    summary: pd.DataFrame,
    score: str,
    fraction: float | None,
    temperature: float,
) -> pd.DataFrame:
    """Down-weight suspected label noise smoothly: weight = 1 / (1 + exp((q - (1 -
    fraction)) / temperature)), q the hardness percentile: 0.5 at the cut, towards 0 for
    the hardest. Needs a score (not the cartography region) and ``fraction``."""
    if score == CARTOGRAPHY or fraction is None:
        raise CurriculumError(SOFT_NEEDS_FRACTION)
    check_fraction("fraction", fraction, low_open=False)
    if not temperature > 0:
        raise CurriculumError(f"temperature must be > 0, got {temperature}")
    q = hardness_percentile(summary, score)
    return weight_frame(summary, 1.0 / (1.0 + np.exp((q - (1.0 - fraction)) / temperature)))


def class_balance(summary: pd.DataFrame) -> pd.DataFrame:
    """weight = N / (C * n_c) for a sample of (trained) label c: every class contributes
    equally to the loss; the mean weight stays 1. Needs a class label per sample (runs of
    sequences or of per-sample losses have none)."""
    if summary["label"].isna().any():
        missing = int(summary["label"].isna().sum())
        raise CurriculumError(
            f"class-balance needs the class label of every sample; {missing} of {len(summary)} have none "
            "(runs of sequences or per-sample losses record no class label)"
        )
    labels = summary["label"].to_numpy()
    classes, counts = np.unique(labels, return_counts=True)
    per_class = dict(zip(classes.tolist(), (len(labels) / (len(classes) * counts)).tolist()))
    return weight_frame(summary, np.array([per_class[c] for c in labels.tolist()]))
