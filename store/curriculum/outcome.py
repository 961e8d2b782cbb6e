"""Outcomes: a rerun beside its parent (per-class validation accuracy, each sample's fate).

``class_accuracy`` reads a run through ``store.queries`` (imported on first call, so that
importing the curriculum package does not load DuckDB); the rest are pure functions of
per-sample summaries (``store.run_summary``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from store.curriculum.format import Curriculum

if TYPE_CHECKING:
    from store.layout import Store

CLASS_ACCURACY_SQL = (
    "SELECT epoch, label, sum(correct_sum)::DOUBLE / nullif(sum(num_samples), 0) AS accuracy, "
    "sum(num_samples) AS num_samples FROM val_classes "
    # the run's monitored validation loader; rows from before loaders were told apart are loader 0
    "WHERE coalesce(dataloader_idx, 0) = $dataloader_idx "
    "GROUP BY epoch, label ORDER BY epoch, label"
)


def class_accuracy(store: Store, run_id: str) -> pd.DataFrame:
    """Validation accuracy per class and epoch on the run's monitored validation loader:
    ``epoch, label, accuracy, num_samples`` (empty for runs recorded before the
    ``val_classes`` table existed)."""
    from store.queries import monitored_dataloader, retry_on_vanishing_files, run_connection

    loader = monitored_dataloader(store, run_id)

    def run() -> pd.DataFrame:
        con = run_connection(store, run_id, ("val_classes",))
        try:
            return con.execute(CLASS_ACCURACY_SQL, {"dataloader_idx": loader}).df()
        finally:
            con.close()

    return retry_on_vanishing_files(run)


def sample_fate(parent: pd.DataFrame, rerun: pd.DataFrame, curriculum: Curriculum) -> pd.DataFrame:
    """What happened to each sample: its curriculum weight, and parent vs rerun confidence
    (mean p_true), correctness and mean loss (per-sample summaries; NaN where a run did not
    record them, e.g. confidence in a per-sample-loss run), with a ``group`` column:
    pruned (weight 0), down-weighted (0 < weight < 1), kept."""
    weight = curriculum.weights_for(parent["sample_id"].to_numpy())
    frame = pd.DataFrame({
        "sample_id": parent["sample_id"].to_numpy(),
        "label_noisy": parent["label_noisy"].to_numpy() if "label_noisy" in parent else False,
        "weight": weight,
        "group": np.where(weight == 0, "pruned", np.where(weight < 1, "down-weighted", "kept")),
        "parent_confidence": parent["confidence"].to_numpy(dtype=float, na_value=np.nan),
        "parent_correctness": parent["correctness"].to_numpy(dtype=float, na_value=np.nan),
        "parent_loss": parent["loss"].to_numpy(dtype=float, na_value=np.nan),
    })
    other = rerun.set_index("sample_id").reindex(frame["sample_id"])
    frame["rerun_confidence"] = other["confidence"].to_numpy(dtype=float, na_value=np.nan)
    frame["rerun_correctness"] = other["correctness"].to_numpy(dtype=float, na_value=np.nan)
    frame["rerun_loss"] = other["loss"].to_numpy(dtype=float, na_value=np.nan)
    return frame


def fate_table(fate: pd.DataFrame) -> pd.DataFrame:
    """``sample_fate`` aggregated per group and noise flag (means; NaN = never presented)."""
    return (
        fate.groupby(["group", "label_noisy"], as_index=False)
        .agg(samples=("sample_id", "size"), parent_confidence=("parent_confidence", "mean"),
             rerun_confidence=("rerun_confidence", "mean"), parent_correctness=("parent_correctness", "mean"),
             rerun_correctness=("rerun_correctness", "mean"), parent_loss=("parent_loss", "mean"),
             rerun_loss=("rerun_loss", "mean"))
    )
