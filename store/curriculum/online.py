"""Online rules: the maths ``training.curriculum_run`` applies while a run trains.

A curriculum with an online rule stores the rule and its parameters in the metadata
(``online: {rule, params}``; defaults in ``store.curriculum.registry``); its table keeps
every sample at weight 1 (``online_only``), or for self-paced the easy-to-hard start
epochs (``store.curriculum.pace``). InfoBatch: Qin et al. 2024; loss-based online
reweighting: Sow et al. 2025.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from store.curriculum.errors import CurriculumError
from store.curriculum.ranking import weight_frame


def online_only(summary: pd.DataFrame) -> pd.DataFrame:
    """The table of a purely online rule: every sample, weight 1 (the rule's parameters
    act while training, not here)."""
    return weight_frame(summary, np.ones(len(summary)))


# -- InfoBatch ----------------------------------------------------------------------------


def check_infobatch(prune_ratio: float, delta: float) -> None:
    if not 0 <= prune_ratio < 1:
        raise CurriculumError(f"prune_ratio must be in [0, 1), got {prune_ratio}")
    if not 0 < delta <= 1:
        raise CurriculumError(f"delta must be in (0, 1], got {delta}")


def infobatch_plan(
    latest_loss: np.ndarray, epoch: int, max_epochs: int, prune_ratio: float,
    delta: float, rng: np.random.Generator | None = None, seen: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """InfoBatch (Qin et al. 2024) for one epoch.

    Returns ``(keep, weight, drop_probability)`` per sample. Before epoch
    ``delta * max_epochs`` samples whose latest loss is below the mean (over samples with a
    known loss) are dropped with probability ``prune_ratio`` and the kept ones weighted
    ``1 / (1 - prune_ratio)``; afterwards (and in an epoch with no losses yet) full data,
    weight 1. ``rng`` defaults to one seeded by ``epoch``.
    """
    check_infobatch(prune_ratio, delta)
    latest_loss = np.asarray(latest_loss, dtype=float)
    n = len(latest_loss)
    known = np.isfinite(latest_loss) if seen is None else (np.asarray(seen, bool) & np.isfinite(latest_loss))
    probability = np.zeros(n)
    if epoch < delta * max_epochs and known.any():
        mean = latest_loss[known].mean()
        probability[known & (latest_loss < mean)] = prune_ratio
    rng = rng or np.random.default_rng(epoch)
    keep = rng.random(n) >= probability
    weight = np.where(probability > 0, 1.0 / (1.0 - prune_ratio), 1.0)
    return keep, np.where(keep, weight, 0.0), probability


# -- loss-based reweighting (Sow et al. 2025) -------------------------------------------


def normalise_losses(losses: np.ndarray, delta: float) -> np.ndarray:
    """Min-max normalise a batch's losses to [-delta, delta] (all equal -> 0)."""
    losses = np.asarray(losses, dtype=float)
    low, high = losses.min(), losses.max()
    if high - low <= 1e-12:
        return np.zeros_like(losses)
    return delta * (2.0 * (losses - low) / (high - low) - 1.0)


def g_linear_upper(normalised: np.ndarray) -> np.ndarray:
    """g(x) = x: favours high losses."""
    return normalised


def g_quadratic(normalised: np.ndarray) -> np.ndarray:
    """g(x) = -x^2: favours medium losses, down-weights both extremes."""
    return -normalised**2


def g_extremes(normalised: np.ndarray) -> np.ndarray:
    """g(x) = |x|: favours both extremes."""
    return np.abs(normalised)


#: the g functions of Sow et al. 2025, by the name ``--g`` takes
SOW_G: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear-upper": g_linear_upper,
    "quadratic": g_quadratic,
    "extremes": g_extremes,
}
SOW_FUNCTIONS = tuple(SOW_G)


def check_g(g: str) -> None:
    if g not in SOW_G:
        raise CurriculumError(f"unknown g {g!r}; expected one of {', '.join(SOW_FUNCTIONS)}")


def sow_g(normalised: np.ndarray, g: str) -> np.ndarray:
    """g of Sow et al. 2025 by name: linear-upper g(x) = x (favours high losses), quadratic
    g(x) = -x^2 (favours medium losses, down-weights both extremes), extremes g(x) = |x|."""
    check_g(g)
    return SOW_G[g](normalised)


def check_sow(g: str, delta: float, tau: float) -> None:
    if not tau > 0:
        raise CurriculumError(f"tau must be > 0, got {tau}")
    if not delta > 0:
        raise CurriculumError(f"delta must be > 0, got {delta}")
    check_g(g)


def sow_weights(losses: np.ndarray, g: str, delta: float, tau: float) -> np.ndarray:
    """Loss-based online reweighting (Sow et al. 2025) of one batch: softmax(g(l~)/tau),
    l~ the losses normalised to [-delta, delta]. Sums to 1; the trainer multiplies by the
    batch size so the loss keeps the scale of a mean."""
    check_sow(g, delta, tau)
    z = sow_g(normalise_losses(losses, delta), g) / tau
    z = np.exp(z - z.max())
    return z / z.sum()
