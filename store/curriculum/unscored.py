"""Samples without a score: never presented in the source run(s), so nothing ranks them.

A rerun that pruned samples never presented them; its per-sample summary has a row for
each of them with no score (``presentations`` = 0). Ranking them would put them at the
hard end (a NaN is hardest), which says nothing about them. So ``build_curriculum``
refuses such a source unless told what to do with them (``UNSCORED_CHOICES``):

* ``keep``: rank only the scored samples; the unscored ones are kept (weight 1, available
  from epoch 0, label unchanged);
* ``drop``: rank only the scored samples; the unscored ones are pruned (weight 0).

Fractions (``keep``, ``fraction``) are then fractions of the scored samples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from store.curriculum.errors import CurriculumError

#: what ``build_curriculum(unscored=...)`` accepts
UNSCORED_CHOICES = ("keep", "drop")


def unscored_mask(summary: pd.DataFrame) -> np.ndarray:
    """True for samples the source run(s) never presented (``presentations`` 0 or missing);
    all False for a summary without a ``presentations`` column."""
    if "presentations" not in summary:
        return np.zeros(len(summary), dtype=bool)
    return pd.to_numeric(summary["presentations"], errors="coerce").fillna(0).to_numpy() == 0


def unscored_message(count: int, total: int, runs: list[str] | None = None) -> str:
    """The one line that says how many samples have no score and what to choose."""
    where = f" in run {', '.join(runs)}" if runs else ""
    return (f"{count} of {total} samples were never presented{where}, so they have no score; choose unscored "
            "(--unscored): keep (rank the others, keep these) or drop (rank the others, prune these)")


def check_unscored(unscored: str | None) -> None:
    if unscored is not None and unscored not in UNSCORED_CHOICES:
        raise CurriculumError(f"unscored must be one of {', '.join(UNSCORED_CHOICES)}, got {unscored!r}")


def with_unscored(table: pd.DataFrame, unscored_rows: pd.DataFrame, unscored: str) -> pd.DataFrame:
    """``table`` (built from the scored samples) with a row for each unscored sample: weight 1
    (``keep``) or 0 (``drop``), start epoch and stage 0, its own label; sorted by sample_id."""
    extra = pd.DataFrame({
        "sample_id": unscored_rows["sample_id"].to_numpy(np.int64),
        "weight": np.full(len(unscored_rows), 1.0 if unscored == "keep" else 0.0),
    })
    for column in table.columns:
        if column in ("start_epoch", "stage"):
            extra[column] = np.zeros(len(extra), dtype=table[column].dtype)
        elif column == "label":
            extra[column] = unscored_rows["label"].to_numpy(np.int64)
    combined = pd.concat([table, extra], ignore_index=True)
    return combined.sort_values("sample_id", kind="stable").reset_index(drop=True)
