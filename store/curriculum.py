"""Curricula: built from per-sample scores, exported as files, validated on load.

Torch-free (the dashboard imports it). Three layers:

* **builders**: pure, deterministic functions over the per-sample summary
  (``store.sample_summary``) that return one row per sample ``sample_id, weight``
  (``weight`` 0 = pruned) and, for pacing, ``start_epoch`` / ``stage``; online rules
  (InfoBatch, loss-based reweighting, self-paced) are stored as a rule + parameters in
  the metadata and applied by ``training.curriculum_run`` while the run trains;
* **the file**: Parquet with the metadata as JSON under the Arrow schema-metadata key
  ``trainmap.curriculum``, or CSV with a JSON side-car ``FILE.csv.json`` (``FILE.json``
  is read too). A plain two-column ``sample_id,weight`` file made with pandas is
  accepted; samples of the dataset that a file does not list are pruned (weight 0);
* **loading**: ``load_curriculum`` validates everything and raises ``CurriculumError``
  (a ``StoreError`` and a ``ValueError``) naming the problem in one line.

Definitions (DESIGN.md): InfoBatch (Qin et al. 2024), loss-based online reweighting
(Sow et al. 2025), pacing functions (Hacohen & Weinshall 2019), self-paced learning
(Kumar et al. 2010), Data Diet offset window (Paul et al. 2021), coverage-centric
stratified pruning (Zheng et al. 2023), AUM (Pleiss et al. 2020), cartography regions
(Swayamdipta et al. 2020).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from store.errors import StoreError
from store.scores import (
    DEFAULT_AMBIGUOUS_VARIABILITY,
    DEFAULT_EASY_CONFIDENCE,
    SCORES,
    cartography_region,
    hardness,
)

#: Version of the curriculum file format; a file with a higher version is refused.
FORMAT_VERSION = 1
METADATA_KEY = b"trainmap.curriculum"
REQUIRED_COLUMNS = ("sample_id", "weight")
OPTIONAL_COLUMNS = ("start_epoch", "stage")
FILE_SUFFIXES = (".parquet", ".csv")
PACINGS = ("linear", "root", "geometric", "step")
SOW_FUNCTIONS = ("linear-upper", "quadratic", "extremes")
ONLINE_RULES = ("infobatch", "loss-reweight", "self-paced")
#: pseudo-score for downweight-noise: the cartography hard-to-learn region
CARTOGRAPHY = "cartography"


class CurriculumError(StoreError, ValueError):
    """A curriculum file or builder input that cannot be used; the message says why."""


# -- the in-memory curriculum --------------------------------------------------------


@dataclass
class Curriculum:
    """One row per sample (``table``) plus provenance (``metadata``)."""

    table: pd.DataFrame
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def strategy(self) -> str | None:
        return self.metadata.get("strategy")

    @property
    def online(self) -> dict[str, Any] | None:
        return self.metadata.get("online")

    @property
    def label(self) -> str:
        """Short human-readable name recorded with the rerun (``run.json: curriculum``)."""
        meta = self.metadata
        if meta.get("name"):
            return str(meta["name"])
        parts = [meta.get("strategy") or "file"]
        if meta.get("score"):
            parts.append(str(meta["score"]))
        for key, value in sorted((meta.get("params") or {}).items()):
            parts.append(f"{key}={value}")
        return " ".join(parts)

    def weights_for(self, sample_ids: np.ndarray) -> np.ndarray:
        """Weight of each of ``sample_ids`` (0 for samples the file does not list)."""
        lookup = pd.Series(self.table["weight"].to_numpy(float), index=self.table["sample_id"].to_numpy())
        return np.array(lookup.reindex(np.asarray(sample_ids)).fillna(0.0), dtype=np.float64)

    def start_epochs_for(self, sample_ids: np.ndarray) -> np.ndarray | None:
        if "start_epoch" not in self.table:
            return None
        lookup = pd.Series(self.table["start_epoch"].to_numpy(np.int64), index=self.table["sample_id"].to_numpy())
        return np.array(lookup.reindex(np.asarray(sample_ids)).fillna(0), dtype=np.int64)

    def summary(self) -> dict[str, Any]:
        weights = self.table["weight"].to_numpy(float)
        return {
            "samples": int(len(weights)),
            "kept": int((weights > 0).sum()),
            "pruned": int((weights == 0).sum()),
            "mean_weight_kept": float(weights[weights > 0].mean()) if (weights > 0).any() else 0.0,
        }


# -- parameters ------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    kind: type | tuple[str, ...]
    help: str


PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param("keep", float, "fraction of samples kept, in (0, 1]"),
        Param("skip", float, "offset: fraction of the easiest samples skipped first, in [0, 1)"),
        Param("bins", int, "stratified: number of equal-width score bins"),
        Param("alpha", float, "upweight-hard: weight = 1 + alpha * hardness percentile, normalised to mean 1"),
        Param("fraction", float, "downweight-noise: fraction of samples suspected (the hardest by the score)"),
        Param("threshold", float, "downweight-noise: suspected when the score is at or beyond this value (e.g. aum 0)"),
        Param("mode", ("hard", "soft"), "downweight-noise: hard (suspected get --floor) or soft (logistic in the percentile)"),
        Param("floor", float, "downweight-noise: weight given to suspected samples (hard mode; 0 = prune)"),
        Param("temperature", float, "downweight-noise soft mode: width of the logistic in percentile units"),
        Param("pacing", PACINGS, "pacing function"),
        Param("r0", float, "pacing: fraction of data available at epoch 0, in (0, 1]"),
        Param("duration", int, "pacing: epoch T by which all data is available"),
        Param("stages", int, "step pacing: number of steps ('baby steps')"),
        Param("power", float, "root pacing: p of the root-p function"),
        Param("prune_ratio", float, "infobatch: probability r of dropping a below-mean-loss sample, in [0, 1)"),
        Param("delta", float, "infobatch: fraction of training before full data (0.875); loss-reweight: bound of the normalised loss"),
        Param("tau", float, "loss-reweight: softmax temperature"),
        Param("g", SOW_FUNCTIONS, "loss-reweight: g function"),
    )
}


@dataclass(frozen=True)
class Strategy:
    name: str
    kind: str  # prune / reweight / pace / online
    description: str
    builder: Callable[..., pd.DataFrame]
    defaults: dict[str, Any]
    needs_score: bool = True
    online_rule: str | None = None


# -- small helpers ---------------------------------------------------------------------


def _hardness_order(summary: pd.DataFrame, score: str) -> np.ndarray:
    """Positions of ``summary`` from easiest to hardest (stable; NaN scores are hardest)."""
    key = hardness(summary, score).to_numpy(float)
    key = np.where(np.isnan(key), np.inf, key)
    return np.argsort(key, kind="stable")


def _percentile(summary: pd.DataFrame, score: str) -> np.ndarray:
    """Hardness percentile per sample: 0 for the easiest, 1 for the hardest (by rank)."""
    n = len(summary)
    order = _hardness_order(summary, score)
    ranks = np.empty(n, dtype=float)
    ranks[order] = np.arange(n)
    return ranks / max(n - 1, 1)


def _count(fraction: float, n: int) -> int:
    return int(min(n, max(0, round(fraction * n))))


def _frame(summary: pd.DataFrame, weight: np.ndarray, **extra: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"sample_id": summary["sample_id"].to_numpy(np.int64), "weight": np.asarray(weight, float)})
    for name, values in extra.items():
        frame[name] = np.asarray(values)
    return frame.sort_values("sample_id", kind="stable").reset_index(drop=True)


def _check_fraction(name: str, value: float, low_open: bool = True, high_closed: bool = True) -> None:
    ok_low = value > 0 if low_open else value >= 0
    ok_high = value <= 1 if high_closed else value < 1
    if not (ok_low and ok_high) or not math.isfinite(value):
        interval = f"{'(' if low_open else '['}0, 1{']' if high_closed else ')'}"
        raise CurriculumError(f"{name} must be in {interval}, got {value}")


def _keep_positions(summary: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    weight = np.zeros(len(summary))
    weight[positions] = 1.0
    return _frame(summary, weight)


# -- selection (pruning) ---------------------------------------------------------------


def keep_easy(summary: pd.DataFrame, score: str, keep: float) -> pd.DataFrame:
    """Keep the ``keep`` fraction of easiest samples by ``score`` (weight 1), prune the rest."""
    _check_fraction("keep", keep)
    return _keep_positions(summary, _hardness_order(summary, score)[: _count(keep, len(summary))])


def keep_hard(summary: pd.DataFrame, score: str, keep: float) -> pd.DataFrame:
    """Keep the ``keep`` fraction of hardest samples (Paul et al. 2021; collapses when data
    is scarce, Sorscher et al. 2022: compare with keep-easy and random)."""
    _check_fraction("keep", keep)
    order = _hardness_order(summary, score)
    k = _count(keep, len(summary))
    return _keep_positions(summary, order[len(order) - k:])


def keep_random(summary: pd.DataFrame, keep: float, seed: int = 0) -> pd.DataFrame:
    """Keep a uniformly random ``keep`` fraction (seeded; the baseline every pruning needs)."""
    _check_fraction("keep", keep)
    rng = np.random.default_rng(seed)
    positions = rng.permutation(len(summary))[: _count(keep, len(summary))]
    return _keep_positions(summary, positions)


def keep_offset(summary: pd.DataFrame, score: str, keep: float, skip: float) -> pd.DataFrame:
    """Skip the ``skip`` fraction of easiest samples, keep the next ``keep`` fraction (the
    Data Diet offset window: drops the hardest too, which are often mislabeled)."""
    _check_fraction("keep", keep)
    _check_fraction("skip", skip, low_open=False, high_closed=False)
    n = len(summary)
    start = _count(skip, n)
    k = _count(keep, n)
    if start + k > n:
        raise CurriculumError(f"skip + keep must be <= 1, got {skip} + {keep}")
    return _keep_positions(summary, _hardness_order(summary, score)[start:start + k])


def keep_stratified(summary: pd.DataFrame, score: str, keep: float, bins: int = 10, seed: int = 0) -> pd.DataFrame:
    """Coverage-balanced selection (Zheng et al. 2023, CCS): split the score's range into
    ``bins`` equal-width bins and spend the budget evenly over them, smallest bins first
    (a bin with fewer samples than its share gives the remainder to the others); within a
    bin samples are drawn at random (seeded). NaN scores form a bin of their own."""
    _check_fraction("keep", keep)
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
    budget = _count(keep, n)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for index, group in enumerate(sorted(groups, key=len)):
        share = budget // (len(groups) - index)
        take = min(len(group), share)
        chosen.append(rng.permutation(group)[:take])
        budget -= take
    return _keep_positions(summary, np.concatenate(chosen) if chosen else np.zeros(0, np.int64))


# -- reweighting -------------------------------------------------------------------------


def upweight_hard(summary: pd.DataFrame, score: str, alpha: float = 1.0) -> pd.DataFrame:
    """weight = 1 + alpha * q, q the hardness percentile (0 easiest, 1 hardest), then
    rescaled to mean 1 so the loss keeps its scale."""
    if not alpha >= 0:
        raise CurriculumError(f"alpha must be >= 0, got {alpha}")
    weight = 1.0 + alpha * _percentile(summary, score)
    return _frame(summary, weight / weight.mean())


def suspected_noise(
    summary: pd.DataFrame,
    score: str,
    fraction: float | None = None,
    threshold: float | None = None,
) -> np.ndarray:
    """Boolean mask of samples suspected to be mislabeled.

    ``score="cartography"``: the hard-to-learn region (low confidence, low variability;
    store.scores cut-offs). Otherwise either the hardest ``fraction`` by the score, or the
    samples at or beyond ``threshold`` in the score's hard direction (aum <= 0, loss >= 2).
    """
    if score == CARTOGRAPHY:
        region = cartography_region(summary["confidence"], summary["variability"])
        return (region == "hard-to-learn").to_numpy()
    if (fraction is None) == (threshold is None):
        raise CurriculumError("downweight-noise needs exactly one of fraction or threshold")
    if fraction is not None:
        _check_fraction("fraction", fraction, low_open=False)
        k = _count(fraction, len(summary))
        mask = np.zeros(len(summary), dtype=bool)
        mask[_hardness_order(summary, score)[len(summary) - k:]] = True
        return mask
    spec = SCORES[score]
    values = summary[score].to_numpy(float)
    with np.errstate(invalid="ignore"):
        mask = values >= threshold if spec.higher_is_harder else values <= threshold
    if spec.never_learned_hardest and "never_learned" in summary:
        mask |= summary["never_learned"].fillna(False).to_numpy(bool)
    return mask


def downweight_noise(
    summary: pd.DataFrame,
    score: str,
    fraction: float | None = None,
    threshold: float | None = None,
    mode: str = "hard",
    floor: float = 0.0,
    temperature: float = 0.05,
) -> pd.DataFrame:
    """Down-weight suspected label noise.

    hard: suspected samples (``suspected_noise``) get weight ``floor`` (0 prunes them),
    the others 1. soft: weight = 1 / (1 + exp((q - (1 - fraction)) / temperature)), q the
    hardness percentile: 0.5 at the cut, towards 0 for the hardest (needs ``fraction``).
    """
    if mode not in ("hard", "soft"):
        raise CurriculumError(f"mode must be hard or soft, got {mode!r}")
    if not 0 <= floor <= 1:
        raise CurriculumError(f"floor must be in [0, 1], got {floor}")
    if mode == "soft":
        if score == CARTOGRAPHY or fraction is None or threshold is not None:
            raise CurriculumError("soft down-weighting needs a score and fraction (not threshold)")
        _check_fraction("fraction", fraction, low_open=False)
        if not temperature > 0:
            raise CurriculumError(f"temperature must be > 0, got {temperature}")
        q = _percentile(summary, score)
        weight = 1.0 / (1.0 + np.exp((q - (1.0 - fraction)) / temperature))
        return _frame(summary, weight)
    mask = suspected_noise(summary, score, fraction, threshold)
    return _frame(summary, np.where(mask, floor, 1.0))


def class_balance(summary: pd.DataFrame) -> pd.DataFrame:
    """weight = N / (C * n_c) for a sample of (trained) label c: every class contributes
    equally to the loss; the mean weight stays 1."""
    labels = summary["label"].to_numpy()
    classes, counts = np.unique(labels, return_counts=True)
    per_class = dict(zip(classes.tolist(), (len(labels) / (len(classes) * counts)).tolist()))
    return _frame(summary, np.array([per_class[c] for c in labels.tolist()]))


# -- pacing ----------------------------------------------------------------------------------


def pacing_fraction(
    epoch: int | np.ndarray,
    pacing: str,
    r0: float,
    duration: int,
    stages: int = 4,
    power: float = 2.0,
) -> np.ndarray:
    """Fraction of the data available at ``epoch`` (Hacohen & Weinshall 2019): grows from
    ``r0`` at epoch 0 to 1 at epoch ``duration`` (x = epoch / duration, clipped to 1):

    linear r0 + (1 - r0) x; root (r0^p + (1 - r0^p) x)^(1/p); geometric r0^(1 - x);
    step r0 + (1 - r0) floor(stages x) / stages.
    """
    if pacing not in PACINGS:
        raise CurriculumError(f"unknown pacing {pacing!r}; expected one of {', '.join(PACINGS)}")
    _check_fraction("r0", r0)
    if duration < 1:
        raise CurriculumError(f"duration must be a positive number of epochs, got {duration}")
    x = np.clip(np.asarray(epoch, dtype=float) / duration, 0.0, 1.0)
    if pacing == "linear":
        value = r0 + (1 - r0) * x
    elif pacing == "root":
        if not power > 0:
            raise CurriculumError(f"power must be > 0, got {power}")
        value = (r0**power + (1 - r0**power) * x) ** (1.0 / power)
    elif pacing == "geometric":
        value = r0 ** (1.0 - x)
    else:
        if stages < 1:
            raise CurriculumError(f"stages must be a positive integer, got {stages}")
        value = r0 + (1 - r0) * np.floor(stages * x + 1e-9) / stages
    return np.clip(value, r0, 1.0)


def available_count(epoch: int, n: int, **pacing: Any) -> int:
    """How many samples are available at ``epoch`` (ceil of fraction * n)."""
    return int(min(n, math.ceil(float(pacing_fraction(epoch, **pacing)) * n - 1e-9)))


def _paced(summary: pd.DataFrame, order: np.ndarray, pacing: str, r0: float, duration: int,
           stages: int, power: float) -> pd.DataFrame:
    n = len(summary)
    start = np.zeros(n, dtype=np.int64)
    previous = 0
    kw = dict(pacing=pacing, r0=r0, duration=duration, stages=stages, power=power)
    for epoch in range(duration + 1):
        count = available_count(epoch, n, **kw)
        start[order[previous:count]] = epoch
        previous = max(previous, count)
    _, stage = np.unique(start, return_inverse=True)
    return _frame(summary, np.ones(n), start_epoch=start, stage=stage.astype(np.int64))


def easy_to_hard(summary: pd.DataFrame, score: str, pacing: str = "linear", r0: float = 0.2,
                 duration: int = 10, stages: int = 4, power: float = 2.0) -> pd.DataFrame:
    """Curriculum: the easiest samples first; each sample's ``start_epoch`` is the first
    epoch whose pacing fraction covers its easiness rank. Batches are drawn from the
    available pool; the number of steps per epoch stays that of the full data."""
    return _paced(summary, _hardness_order(summary, score), pacing, r0, duration, stages, power)


def anti_curriculum(summary: pd.DataFrame, score: str, pacing: str = "linear", r0: float = 0.2,
                    duration: int = 10, stages: int = 4, power: float = 2.0) -> pd.DataFrame:
    """Anti-curriculum: hardest first, same pacing."""
    return _paced(summary, _hardness_order(summary, score)[::-1], pacing, r0, duration, stages, power)


def self_paced(summary: pd.DataFrame, score: str, pacing: str = "linear", r0: float = 0.2,
               duration: int = 10, stages: int = 4, power: float = 2.0) -> pd.DataFrame:
    """Self-paced learning (Kumar et al. 2010), online: at each epoch the samples whose
    latest training loss is among the lowest ``pacing_fraction(epoch)`` are trained on
    (the loss threshold grows with the pacing function). Samples not seen yet rank by the
    source run's score, which also fixes epoch 0 (``start_epoch`` as easy-to-hard)."""
    return easy_to_hard(summary, score, pacing, r0, duration, stages, power)


# -- online rules (applied by training.curriculum_run) ------------------------------------


def _all_ones(summary: pd.DataFrame) -> pd.DataFrame:
    return _frame(summary, np.ones(len(summary)))


def infobatch_plan(
    latest_loss: np.ndarray, epoch: int, max_epochs: int, prune_ratio: float = 0.5,
    delta: float = 0.875, rng: np.random.Generator | None = None, seen: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """InfoBatch (Qin et al. 2024) for one epoch.

    Returns ``(keep, weight, drop_probability)`` per sample. Before epoch
    ``delta * max_epochs`` samples whose latest loss is below the mean (over samples with a
    known loss) are dropped with probability ``prune_ratio`` and the kept ones weighted
    ``1 / (1 - prune_ratio)``; afterwards (and in an epoch with no losses yet) full data,
    weight 1.
    """
    if not 0 <= prune_ratio < 1:
        raise CurriculumError(f"prune_ratio must be in [0, 1), got {prune_ratio}")
    if not 0 < delta <= 1:
        raise CurriculumError(f"delta must be in (0, 1], got {delta}")
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


def normalise_losses(losses: np.ndarray, delta: float = 1.0) -> np.ndarray:
    """Min-max normalise a batch's losses to [-delta, delta] (all equal -> 0)."""
    losses = np.asarray(losses, dtype=float)
    low, high = losses.min(), losses.max()
    if high - low <= 1e-12:
        return np.zeros_like(losses)
    return delta * (2.0 * (losses - low) / (high - low) - 1.0)


def sow_g(normalised: np.ndarray, g: str) -> np.ndarray:
    """g of Sow et al. 2025: linear-upper g(x) = x (favours high losses), quadratic
    g(x) = -x^2 (favours medium losses, down-weights both extremes), extremes g(x) = |x|."""
    if g == "linear-upper":
        return normalised
    if g == "quadratic":
        return -normalised**2
    if g == "extremes":
        return np.abs(normalised)
    raise CurriculumError(f"unknown g {g!r}; expected one of {', '.join(SOW_FUNCTIONS)}")


def sow_weights(losses: np.ndarray, g: str = "linear-upper", delta: float = 1.0, tau: float = 1.0) -> np.ndarray:
    """Loss-based online reweighting (Sow et al. 2025) of one batch: softmax(g(l~)/tau),
    l~ the losses normalised to [-delta, delta]. Sums to 1; the trainer multiplies by the
    batch size so the loss keeps the scale of a mean."""
    if not tau > 0:
        raise CurriculumError(f"tau must be > 0, got {tau}")
    if not delta > 0:
        raise CurriculumError(f"delta must be > 0, got {delta}")
    z = sow_g(normalise_losses(losses, delta), g) / tau
    z = np.exp(z - z.max())
    return z / z.sum()


# -- the registry ------------------------------------------------------------------------------


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("keep-easy", "prune", "keep the easiest fraction", keep_easy, {"keep": 0.5}),
        Strategy("keep-hard", "prune", "keep the hardest fraction (Data Diet)", keep_hard, {"keep": 0.5}),
        Strategy("random", "prune", "keep a random fraction (seeded)", keep_random, {"keep": 0.5}, needs_score=False),
        Strategy("offset", "prune", "skip the easiest, keep the next window (Data Diet offset)", keep_offset,
                 {"keep": 0.5, "skip": 0.1}),
        Strategy("stratified", "prune", "coverage-balanced over score bins (CCS)", keep_stratified,
                 {"keep": 0.5, "bins": 10}),
        Strategy("upweight-hard", "reweight", "up-weight hard samples", upweight_hard, {"alpha": 1.0}),
        Strategy("downweight-noise", "reweight", "down-weight suspected label noise (AUM, EL2N, loss, "
                 "forgetting, cartography)", downweight_noise,
                 {"fraction": None, "threshold": None, "mode": "hard", "floor": 0.0, "temperature": 0.05}),
        Strategy("class-balance", "reweight", "equal total weight per class", class_balance, {}, needs_score=False),
        Strategy("easy-to-hard", "pace", "curriculum with a pacing function", easy_to_hard,
                 {"pacing": "linear", "r0": 0.2, "duration": 10, "stages": 4, "power": 2.0}),
        Strategy("anti-curriculum", "pace", "hardest first with a pacing function", anti_curriculum,
                 {"pacing": "linear", "r0": 0.2, "duration": 10, "stages": 4, "power": 2.0}),
        Strategy("self-paced", "online", "online: lowest current losses first, threshold grown by pacing",
                 self_paced, {"pacing": "linear", "r0": 0.2, "duration": 10, "stages": 4, "power": 2.0},
                 online_rule="self-paced"),
        Strategy("infobatch", "online", "online: drop below-mean-loss samples with probability r",
                 lambda summary, **_: _all_ones(summary), {"prune_ratio": 0.5, "delta": 0.875},
                 needs_score=False, online_rule="infobatch"),
        Strategy("loss-reweight", "online", "online: per-batch softmax weights of normalised losses (Sow et al.)",
                 lambda summary, **_: _all_ones(summary), {"g": "linear-upper", "delta": 1.0, "tau": 1.0},
                 needs_score=False, online_rule="loss-reweight"),
    )
}


def _coerce(param: str, value: Any) -> Any:
    spec = PARAMS[param]
    if value is None:
        return None
    if isinstance(spec.kind, tuple):
        if value not in spec.kind:
            raise CurriculumError(f"{param} must be one of {', '.join(spec.kind)}, got {value!r}")
        return value
    try:
        if spec.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        number = float(value)
        if not math.isfinite(number):
            raise ValueError
        return number
    except (TypeError, ValueError):
        raise CurriculumError(f"{param} must be a finite {spec.kind.__name__}, got {value!r}") from None


def build_curriculum(
    summary: pd.DataFrame,
    strategy: str,
    score: str | None = None,
    *,
    seed: int = 0,
    task: str | None = None,
    source_runs: list[str] | None = None,
    name: str | None = None,
    **params: Any,
) -> Curriculum:
    """Build a curriculum from a per-sample summary with one of ``STRATEGIES``.

    Parameters not given take the strategy's defaults; a parameter the strategy does not
    use is an error (so a typo never silently does nothing).
    """
    if strategy not in STRATEGIES:
        raise CurriculumError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    spec = STRATEGIES[strategy]
    given = {k: v for k, v in params.items() if v is not None}
    unused = sorted(set(given) - set(spec.defaults))
    if unused:
        raise CurriculumError(
            f"strategy {strategy!r} does not take {', '.join(unused)}; it takes "
            f"{', '.join(spec.defaults) or 'no parameters'}"
        )
    values = {k: _coerce(k, given.get(k, default)) for k, default in spec.defaults.items()}
    if strategy == "downweight-noise" and score != CARTOGRAPHY and values["fraction"] is None and values["threshold"] is None:
        values["fraction"] = 0.1
    if spec.needs_score:
        if score is None:
            raise CurriculumError(f"strategy {strategy!r} needs a score (one of {', '.join(SCORES)})")
        allowed = list(SCORES) + ([CARTOGRAPHY] if strategy == "downweight-noise" else [])
        if score not in allowed:
            raise CurriculumError(f"unknown score {score!r}; expected one of {', '.join(allowed)}")
        needed = ["confidence", "variability"] if score == CARTOGRAPHY else [score]
        missing = [c for c in needed if c not in summary]
        if missing:
            raise CurriculumError(f"the scores have no column {', '.join(missing)}")
        if score != CARTOGRAPHY and summary[score].isna().all():
            raise CurriculumError(f"score {score!r} was not recorded for these runs (all values missing)")
    else:
        score = None
    if len(summary) == 0:
        raise CurriculumError("the scores have no samples")
    call = dict(values)
    if strategy in ("random", "stratified"):
        call["seed"] = seed
    if spec.needs_score:
        table = spec.builder(summary, score, **call)
    else:
        table = spec.builder(summary, **call)
    if not (table["weight"] > 0).any():
        raise CurriculumError(f"strategy {strategy!r} with these parameters keeps no samples")
    metadata: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "source_runs": list(source_runs or []),
        "score": score,
        "strategy": strategy,
        "kind": spec.kind,
        "params": {k: v for k, v in values.items() if v is not None},
        "seed": seed,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "online": None,
    }
    if name:
        metadata["name"] = name
    if strategy == "downweight-noise" and values.get("mode") == "hard":
        metadata["params"].pop("temperature", None)
    if spec.online_rule:
        metadata["online"] = {"rule": spec.online_rule, "params": dict(metadata["params"])}
    return Curriculum(table, metadata)


# -- the file ------------------------------------------------------------------------------------


def sidecar_paths(path: Path) -> list[Path]:
    """Where a CSV's metadata may live: ``FILE.csv.json`` (written), then ``FILE.json``."""
    return [path.with_name(path.name + ".json"), path.with_suffix(".json")]


def save_curriculum(curriculum: Curriculum, path: str | os.PathLike[str]) -> Path:
    """Write Parquet (metadata in the schema) or CSV + ``FILE.csv.json``; atomic."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise CurriculumError(f"cannot write {str(path)!r}: a curriculum file ends in .parquet or .csv")
    if not path.parent.is_dir():
        raise CurriculumError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist")
    table = curriculum.table
    columns = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in table]
    frame = table[columns].copy()
    frame["sample_id"] = frame["sample_id"].astype(np.int64)
    frame["weight"] = frame["weight"].astype(np.float64)
    metadata = json.dumps(curriculum.metadata, sort_keys=True, default=str)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    if suffix == ".parquet":
        arrow = pa.Table.from_pandas(frame, preserve_index=False)
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), METADATA_KEY: metadata.encode()})
        pq.write_table(arrow, tmp)
        os.replace(tmp, path)
    else:
        frame.to_csv(tmp, index=False, float_format="%.17g")
        side = sidecar_paths(path)[0]
        side_tmp = side.with_name(side.name + f".{os.getpid()}.tmp")
        side_tmp.write_text(json.dumps(curriculum.metadata, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(side_tmp, side)
        os.replace(tmp, path)
    return path


def curriculum_to_bytes(curriculum: Curriculum, suffix: str = ".parquet") -> bytes:
    """The file's bytes (for a download button); CSV carries no side-car here."""
    import io

    if suffix == ".parquet":
        frame = curriculum.table[[c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in curriculum.table]]
        arrow = pa.Table.from_pandas(frame, preserve_index=False)
        arrow = arrow.replace_schema_metadata(
            {**(arrow.schema.metadata or {}), METADATA_KEY: json.dumps(curriculum.metadata, default=str).encode()}
        )
        sink = io.BytesIO()
        pq.write_table(arrow, sink)
        return sink.getvalue()
    return curriculum.table.to_csv(index=False, float_format="%.17g").encode()


def _fail(path: Path, message: str) -> CurriculumError:
    return CurriculumError(f"curriculum file {str(path)!r}: {message}")


def _read_file(path: Path) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise _fail(path, f"unknown extension {suffix or '(none)'!r}; expected .parquet or .csv")
    if not path.is_file():
        raise _fail(path, "does not exist")
    metadata = None
    try:
        if suffix == ".parquet":
            table = pq.read_table(path)
            raw = (table.schema.metadata or {}).get(METADATA_KEY)
            if raw is not None:
                metadata = json.loads(raw)
            frame = table.to_pandas()
        else:
            frame = pd.read_csv(path)
            for side in sidecar_paths(path):
                if side.is_file():
                    metadata = json.loads(side.read_text())
                    break
    except json.JSONDecodeError as error:
        raise _fail(path, f"metadata is not valid JSON ({error})") from None
    except (OSError, ValueError, pa.ArrowException) as error:
        raise _fail(path, f"cannot be read as {suffix[1:]} ({error})") from None
    if metadata is not None and not isinstance(metadata, dict):
        raise _fail(path, "metadata must be a JSON object")
    return frame, metadata


def validate_table(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Columns, types and values of a curriculum table; returns it with clean dtypes."""
    columns = list(frame.columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise _fail(path, f"missing column {', '.join(missing)} (expected sample_id, weight[, start_epoch, stage]; got {', '.join(map(str, columns)) or 'none'})")
    extra = [c for c in columns if c not in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)]
    if extra:
        raise _fail(path, f"unexpected column {', '.join(map(str, extra))} (allowed: sample_id, weight, start_epoch, stage)")
    if len(frame) == 0:
        raise _fail(path, "has no rows")
    clean = pd.DataFrame()
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise _fail(path, f"column {column} has a non-numeric value {frame[column].iloc[row]!r} (row {row + 1})")
        if column != "weight":
            if values.isna().any():
                row = int(np.flatnonzero(values.isna().to_numpy())[0])
                raise _fail(path, f"column {column} has an empty value (row {row + 1})")
            if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
                raise _fail(path, f"column {column} must hold integers")
            if column != "sample_id" and (values < 0).any():
                raise _fail(path, f"column {column} must be >= 0")
            clean[column] = values.astype(np.int64)
        else:
            clean[column] = values.astype(np.float64)
    weight = clean["weight"].to_numpy()
    ids = clean["sample_id"].to_numpy()
    for problem, mask in (("NaN or empty", np.isnan(weight)), ("infinite", np.isinf(weight)), ("negative", weight < 0)):
        if mask.any():
            raise _fail(path, f"{int(mask.sum())} {problem} weight(s), first at sample_id {int(ids[mask][0])}; weights must be finite and >= 0")
    if not (weight > 0).any():
        raise _fail(path, "all weights are zero; nothing would be trained on")
    duplicated = pd.Series(ids).duplicated(keep=False).to_numpy()
    if duplicated.any():
        shown = sorted(set(ids[duplicated].tolist()))[:5]
        raise _fail(path, f"duplicate sample_id {', '.join(map(str, shown))}")
    return clean.sort_values("sample_id", kind="stable").reset_index(drop=True)


def validate_metadata(metadata: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    metadata = dict(metadata or {})
    version = metadata.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _fail(path, f"format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise _fail(path, f"format_version {version} is newer than this trainmap reads ({FORMAT_VERSION}); upgrade trainmap")
    metadata["format_version"] = version
    online = metadata.get("online")
    if online is not None:
        if not isinstance(online, dict) or online.get("rule") not in ONLINE_RULES:
            raise _fail(path, f"unknown online rule {online!r}; expected one of {', '.join(ONLINE_RULES)}")
        params = online.get("params") or {}
        try:
            for key, value in params.items():
                if key not in PARAMS:
                    raise CurriculumError(f"unknown parameter {key!r}")
                params[key] = _coerce(key, value)
            if online["rule"] == "infobatch":
                infobatch_plan(np.zeros(1), 0, 1, params.get("prune_ratio", 0.5), params.get("delta", 0.875))
            elif online["rule"] == "loss-reweight":
                sow_weights(np.zeros(2), params.get("g", "linear-upper"), params.get("delta", 1.0), params.get("tau", 1.0))
            else:
                pacing_fraction(0, params.get("pacing", "linear"), params.get("r0", 0.2), params.get("duration", 10),
                                params.get("stages", 4), params.get("power", 2.0))
        except CurriculumError as error:
            raise _fail(path, f"online rule {online['rule']}: {error}") from None
        metadata["online"] = {"rule": online["rule"], "params": params}
    return metadata


def load_curriculum(
    path: str | os.PathLike[str],
    *,
    task: str | None = None,
    sample_ids: np.ndarray | None = None,
) -> Curriculum:
    """Read and validate a curriculum file.

    ``task``: refuse a file made for another task. ``sample_ids``: the dataset's ids;
    ids the dataset does not have are an error, dataset samples the file does not list
    are pruned (weight 0).
    """
    path = Path(path)
    frame, metadata = _read_file(path)
    table = validate_table(frame, path)
    metadata = validate_metadata(metadata, path)
    file_task = metadata.get("task")
    if task is not None and file_task not in (None, "", task):
        raise _fail(path, f"was built for task {file_task!r}, not {task!r}")
    if sample_ids is not None:
        known = np.isin(table["sample_id"].to_numpy(), np.asarray(sample_ids))
        if not known.all():
            unknown = table["sample_id"].to_numpy()[~known]
            raise _fail(
                path,
                f"{len(unknown)} sample_id(s) not in the dataset (it has {len(sample_ids)} samples), "
                f"e.g. {', '.join(map(str, unknown[:5].tolist()))}",
            )
    return Curriculum(table, metadata)


def curricula_dir(store_root: str | os.PathLike[str]) -> Path:
    """``<store>/curricula``: where built curricula are kept beside the runs."""
    return Path(store_root) / "curricula"


def save_to_store(curriculum: Curriculum, store_root: str | os.PathLike[str], filename: str | None = None) -> Path:
    """Save a copy (Parquet) into ``<store>/curricula/`` and return its path."""
    folder = curricula_dir(store_root)
    folder.mkdir(parents=True, exist_ok=True)
    if filename is None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        strategy = curriculum.strategy or "file"
        score = curriculum.metadata.get("score") or "none"
        filename = f"{stamp}-{strategy}-{score}.parquet"
    target = folder / Path(filename).name
    counter = 1
    while target.exists():
        target = target.with_name(f"{Path(filename).stem}-{counter}{target.suffix}")
        counter += 1
    return save_curriculum(curriculum, target)


def list_curricula(store_root: str | os.PathLike[str]) -> list[Path]:
    folder = curricula_dir(store_root)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in FILE_SUFFIXES and not p.name.endswith(".tmp"))


# -- outcomes: a rerun beside its parent ------------------------------------------------------


def class_accuracy(store: Any, run_id: str) -> pd.DataFrame:
    """Validation accuracy per class and epoch: ``epoch, label, accuracy, num_samples``
    (empty for runs recorded before the ``val_classes`` table existed)."""
    from store.queries import _retry_on_vanishing_files, run_connection

    def run() -> pd.DataFrame:
        con = run_connection(store, run_id, ("val_classes",))
        try:
            return con.execute(
                "SELECT epoch, label, sum(correct_sum)::DOUBLE / nullif(sum(num_samples), 0) AS accuracy, "
                "sum(num_samples) AS num_samples FROM val_classes GROUP BY epoch, label ORDER BY epoch, label"
            ).df()
        finally:
            con.close()

    return _retry_on_vanishing_files(run)


def sample_fate(parent: pd.DataFrame, rerun: pd.DataFrame, curriculum: Curriculum) -> pd.DataFrame:
    """What happened to each sample: its curriculum weight, and parent vs rerun confidence
    (mean p_true) and correctness (per-sample summaries), with a ``group`` column:
    pruned (weight 0), down-weighted (0 < weight < 1), kept."""
    weight = curriculum.weights_for(parent["sample_id"].to_numpy())
    frame = pd.DataFrame({
        "sample_id": parent["sample_id"].to_numpy(),
        "label_noisy": parent["label_noisy"].to_numpy() if "label_noisy" in parent else False,
        "weight": weight,
        "group": np.where(weight == 0, "pruned", np.where(weight < 1, "down-weighted", "kept")),
        "parent_confidence": parent["confidence"].to_numpy(),
        "parent_correctness": parent["correctness"].to_numpy(),
    })
    other = rerun.set_index("sample_id").reindex(frame["sample_id"])
    frame["rerun_confidence"] = other["confidence"].to_numpy()
    frame["rerun_correctness"] = other["correctness"].to_numpy()
    return frame


def fate_table(fate: pd.DataFrame) -> pd.DataFrame:
    """``sample_fate`` aggregated per group and noise flag (means; NaN = never presented)."""
    return (
        fate.groupby(["group", "label_noisy"], as_index=False)
        .agg(samples=("sample_id", "size"), parent_confidence=("parent_confidence", "mean"),
             rerun_confidence=("rerun_confidence", "mean"), parent_correctness=("parent_correctness", "mean"),
             rerun_correctness=("rerun_correctness", "mean"))
    )
