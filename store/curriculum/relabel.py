"""The relabel strategy: suspected label noise trains on a suggested label instead of being dropped.

Suspected noise is chosen as downweight-noise chooses it (``suspected_noise``: the hardest
``fraction`` by a score, a ``threshold`` of it, or the cartography hard-to-learn region).
Each suspected sample whose suggested label (``store.views.relabel.suggested_labels``: the
class its presentations predicted most often over a window of epochs) differs from its
label, with a suggested confidence of at least ``min_confidence``, gets that label; every
sample keeps weight 1. The table gains the column ``label``: the label each sample trains
on (its own where unchanged). The summary must carry ``suggested_label`` and
``suggested_confidence`` (``with_suggestions``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from store.curriculum.errors import CurriculumError
from store.curriculum.ranking import weight_frame
from store.curriculum.reweight import suspected_noise

#: the summary columns the relabel builder needs besides the score
SUGGESTION_COLUMNS = ("suggested_label", "suggested_confidence")


def with_suggestions(summary: pd.DataFrame, suggestions: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with ``suggested_label`` and ``suggested_confidence`` joined by sample_id
    (NA for samples ``suggestions`` lacks)."""
    columns = ["sample_id", *SUGGESTION_COLUMNS]
    base = summary.drop(columns=[c for c in SUGGESTION_COLUMNS if c in summary])
    return base.merge(suggestions[columns], on="sample_id", how="left")


def combine_suggestions(per_run: list[pd.DataFrame]) -> pd.DataFrame:
    """One suggestion per sample from several runs' ``suggested_labels``: the label with the
    most votes summed over the runs (a run's votes for its winner: confidence x window
    presentations), its confidence those votes over all the runs' window presentations.
    Ties: the smallest label. One run's frame comes back as it is."""
    if len(per_run) == 1:
        return per_run[0]
    frame = pd.concat(per_run, ignore_index=True)
    frame["votes"] = frame["suggested_confidence"].fillna(0) * frame["window_presentations"]
    totals = frame.groupby("sample_id")["window_presentations"].sum()
    voted = frame.dropna(subset=["suggested_label"]).groupby(["sample_id", "suggested_label"])["votes"].sum()
    best = voted.reset_index().sort_values(["sample_id", "votes", "suggested_label"], ascending=[True, False, True])
    best = best.drop_duplicates("sample_id").set_index("sample_id")
    out = pd.DataFrame({"sample_id": totals.index.to_numpy()})
    out["suggested_label"] = best["suggested_label"].reindex(out["sample_id"]).astype("Int64").to_numpy()
    presented = totals.reindex(out["sample_id"]).replace(0, np.nan)
    out["suggested_confidence"] = (best["votes"].reindex(out["sample_id"]) / presented).to_numpy()
    out["window_presentations"] = totals.to_numpy()
    return out


def relabel_noise(
    summary: pd.DataFrame,
    score: str,
    fraction: float | None,
    threshold: float | None,
    min_confidence: float,
) -> pd.DataFrame:
    """Weight 1 for every sample; column ``label``: the suggested label for suspected noise
    whose suggestion differs and is confident enough, the sample's own label otherwise."""
    missing = [c for c in ("label", *SUGGESTION_COLUMNS) if c not in summary]
    if missing:
        raise CurriculumError(f"relabel needs the columns {', '.join(missing)} (suggested labels of the source run: "
                              "store.views.relabel.suggested_labels)")
    if not 0 <= min_confidence <= 1:
        raise CurriculumError(f"min_confidence must be in [0, 1], got {min_confidence}")
    if summary["label"].isna().any():
        raise CurriculumError("relabel needs the class label of every sample; runs of sequences or per-sample "
                              "losses record none")
    labels = summary["label"].to_numpy(np.int64)
    suggested = pd.to_numeric(summary["suggested_label"], errors="coerce").to_numpy(float)
    confidence = pd.to_numeric(summary["suggested_confidence"], errors="coerce").to_numpy(float)
    suspected = suspected_noise(summary, score, fraction, threshold)
    with np.errstate(invalid="ignore"):
        change = suspected & np.isfinite(suggested) & (suggested != labels) & (confidence >= min_confidence)
    trained = np.where(change, np.nan_to_num(suggested).astype(np.int64), labels)
    return weight_frame(summary, np.ones(len(summary)), label=trained)
