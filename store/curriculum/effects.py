"""What a curriculum does to each class and to the data as a whole, before it is launched.

Pure functions of a per-sample summary and the curriculum's weight of each of its rows
(``Curriculum.weights_for``), shared by the dashboard's preview and any script.

* ``class_effect``: per class, how many samples are kept and what share of the training
  weight the class gets compared with its share of the samples (``weight_ratio`` = 1: the
  class keeps its proportion; 0.5: it lost half of it), and whether that ratio is below a
  chosen floor;
* ``effective_sample_count``: Kish's effective sample size of a weighting,
  (sum w)^2 / sum w^2 (N for equal weights, the kept count for 0/1 weights);
* ``relabel_counts``: how many labels a relabel curriculum replaces, and how many flipped
  labels it gives back their clean label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: the columns of ``class_effect``, in order
CLASS_EFFECT_COLUMNS = ("label", "samples", "kept", "kept_share", "sample_share", "weight_share", "weight_ratio",
                        "below_floor")


def class_effect(summary: pd.DataFrame, weight: np.ndarray, floor: float) -> pd.DataFrame:
    """One row per class of ``summary["label"]``: ``samples``; ``kept`` (weight > 0);
    ``kept_share`` = kept / samples; ``sample_share`` = samples / all samples;
    ``weight_share`` = the class's total weight / the total weight; ``weight_ratio`` =
    weight_share / sample_share; ``below_floor`` = weight_ratio < ``floor``. Samples
    without a label are left out (an empty frame when none has one)."""
    weight = np.asarray(weight, dtype=np.float64)
    labels = summary["label"]
    known = labels.notna().to_numpy()
    if not known.any():
        return pd.DataFrame(columns=list(CLASS_EFFECT_COLUMNS))
    frame = pd.DataFrame({"label": labels[known].astype("int64").to_numpy(), "weight": weight[known]})
    frame["kept"] = frame["weight"] > 0
    grouped = frame.groupby("label").agg(samples=("kept", "size"), kept=("kept", "sum"), weight=("weight", "sum"))
    total_weight = grouped["weight"].sum()
    out = grouped.reset_index()
    out["kept"] = out["kept"].astype(np.int64)
    out["kept_share"] = out["kept"] / out["samples"]
    out["sample_share"] = out["samples"] / out["samples"].sum()
    out["weight_share"] = out["weight"] / total_weight if total_weight > 0 else 0.0
    out["weight_ratio"] = out["weight_share"] / out["sample_share"]
    out["below_floor"] = out["weight_ratio"] < floor
    return out[list(CLASS_EFFECT_COLUMNS)]


def effective_sample_count(weight: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2; 0 when every weight is 0."""
    weight = np.asarray(weight, dtype=np.float64)
    squares = float(np.square(weight).sum())
    return float(weight.sum()) ** 2 / squares if squares > 0 else 0.0


def relabel_counts(summary: pd.DataFrame, labels: np.ndarray) -> dict[str, int]:
    """``replaced``: rows whose ``labels`` differ from ``summary["label"]``; ``flipped``:
    rows with ``label_noisy``; ``flipped_fixed``: flipped rows given their ``original_label``;
    ``clean_broken``: unflipped rows given another label."""
    labels = np.asarray(labels)
    current = summary["label"].to_numpy()
    original = summary["original_label"].to_numpy() if "original_label" in summary else current
    noisy = summary["label_noisy"].fillna(False).to_numpy(bool) if "label_noisy" in summary \
        else np.zeros(len(summary), dtype=bool)
    replaced = labels != current
    return {
        "replaced": int(replaced.sum()),
        "flipped": int(noisy.sum()),
        "flipped_fixed": int((replaced & noisy & (labels == original)).sum()),
        "clean_broken": int((replaced & ~noisy).sum()),
    }
