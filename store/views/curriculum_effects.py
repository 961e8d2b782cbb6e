"""What a curriculum does to a run's samples, and what its rerun did per class.

Pure pandas over a per-sample summary and the curriculum's weight of each of its
samples (``Curriculum.weights_for``): no DuckDB, no file access, so the dashboard's
curriculum page and any script get the same counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from store.scores import REGIONS, cartography_region

#: The groups a weight puts a sample in, in the order the data map draws them.
WEIGHT_GROUPS = ("kept", "down-weighted", "pruned")


def weight_groups(weight: np.ndarray) -> np.ndarray:
    """"pruned" (weight 0), "down-weighted" (0 < weight < 1) or "kept", per sample."""
    weight = np.asarray(weight)
    return np.where(weight == 0, "pruned", np.where(weight < 1, "down-weighted", "kept"))


@dataclass(frozen=True)
class CurriculumPreview:
    """A curriculum's weights laid over the summary it was built from (same row order)."""

    #: the curriculum's weight of each summary row (0 where the file does not list the sample)
    weight: np.ndarray
    #: samples with a flipped label, and how many of them are pruned / down-weighted
    flipped: int
    flipped_pruned: int
    flipped_down_weighted: int
    #: per label: samples, kept, mean_weight
    kept_per_class: pd.DataFrame
    #: per cartography region (all three, in ``REGIONS`` order): samples, kept, flipped
    kept_per_region: pd.DataFrame


def curriculum_preview(summary: pd.DataFrame, weight: np.ndarray) -> CurriculumPreview:
    """Counts of what ``weight`` keeps of ``summary``, per class and per cartography region."""
    weight = np.asarray(weight, dtype=np.float64)
    noisy = summary["label_noisy"].fillna(False).to_numpy(bool)
    per_class = pd.DataFrame({"label": summary["label"], "kept": weight > 0, "weight": weight})
    by_class = per_class.groupby("label").agg(
        samples=("kept", "size"), kept=("kept", "sum"), mean_weight=("weight", "mean"))
    region = cartography_region(summary["confidence"], summary["variability"])
    by_region = pd.DataFrame({"region": region, "kept": weight > 0, "flipped": noisy}).groupby("region").agg(
        samples=("kept", "size"), kept=("kept", "sum"), flipped=("flipped", "sum")).reindex(list(REGIONS)).fillna(0)
    flipped_weight = weight[noisy]
    return CurriculumPreview(
        weight=weight,
        flipped=int(noisy.sum()),
        flipped_pruned=int((flipped_weight == 0).sum()),
        flipped_down_weighted=int(((flipped_weight > 0) & (flipped_weight < 1)).sum()),
        kept_per_class=by_class.reset_index(),
        kept_per_region=by_region.reset_index(),
    )


def weight_map_points(summary: pd.DataFrame, weight: np.ndarray, max_points: int,
                      seed: int = 0) -> tuple[pd.DataFrame, dict[str, int]]:
    """Data-map points grouped by weight: at most ``max_points`` per group (a seeded random
    sample of the group when it is larger), and every group's full size.

    The frame has sample_id, confidence, variability, label_noisy and ``group`` (one of
    ``WEIGHT_GROUPS``), the groups in that order.
    """
    group = weight_groups(weight)
    parts, sizes = [], {}
    for name in WEIGHT_GROUPS:
        part = summary[group == name]
        if part.empty:
            continue
        sizes[name] = int((group == name).sum())
        if len(part) > max_points:
            part = part.sample(max_points, random_state=seed)
        parts.append(part[["sample_id", "confidence", "variability", "label_noisy"]].assign(group=name))
    if not parts:
        return pd.DataFrame(columns=["sample_id", "confidence", "variability", "label_noisy", "group"]), sizes
    return pd.concat(parts, ignore_index=True), sizes


def start_epoch_counts(table: pd.DataFrame) -> pd.Series | None:
    """Samples becoming available per epoch of a paced curriculum table; None when not paced."""
    if "start_epoch" not in table:
        return None
    return table["start_epoch"].value_counts().sort_index()


def last_epoch_class_accuracy(accuracy_by_run: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """Validation accuracy per class at each run's last recorded epoch, one column per run.

    ``accuracy_by_run`` maps a column label to a run's ``epoch, label, accuracy`` frame
    (``store.curriculum.class_accuracy``); runs without one are left out; None when none has.
    """
    columns = []
    for label, accuracy in accuracy_by_run.items():
        if accuracy.empty:
            continue
        last = accuracy[accuracy["epoch"] == accuracy["epoch"].max()]
        columns.append(last.set_index("label")["accuracy"].rename(label))
    if not columns:
        return None
    return pd.concat(columns, axis=1).reset_index()
