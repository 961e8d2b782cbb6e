"""Suggested labels: the class each sample's presentations predicted most often.

The recorder keeps each presentation's predicted class (``pred``), not the full vector of
probabilities, so the suggestion is a vote: over the chosen epochs (by default the last
half of the epochs the run recorded), a sample's ``suggested_label`` is the class predicted
most often and its ``suggested_confidence`` is the share of those presentations that
predicted it (1.0: every presentation agreed). A tie goes to the label the sample was
trained on, then to the smallest class. The query is ``store/sql/suggested_labels.sql``.

Pages show the columns beside a sample's label; the ``relabel`` curriculum strategy
(``store.curriculum.relabel``) replaces suspected noise by them.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from store.compaction import first_half, materialised_suggested_labels
from store.errors import StoreError
from store.layout import Store
from store.queries import query_run, retry_on_vanishing_files, run_connection

#: The columns of ``suggested_labels``, in order.
SUGGESTED_COLUMNS = (
    "sample_id", "label", "original_label", "label_noisy",
    "suggested_label", "suggested_confidence", "window_presentations",
)


def recorded_epochs(store: Store, run_id: str) -> tuple[int, int] | None:
    """The first and last epoch with presentations in the run, or None while it has none."""

    def read() -> tuple[int | None, int | None]:
        con = run_connection(store, run_id, tables=("presentations",))
        try:
            return con.execute("SELECT min(epoch), max(epoch) FROM presentations").fetchone()
        finally:
            con.close()

    try:
        low, high = retry_on_vanishing_files(read)
    except duckdb.Error as error:
        raise StoreError(f"could not read the epochs of run {run_id!r}: {error}") from error
    if low is None:
        return None
    return int(low), int(high)


def default_relabel_epochs(store: Store, run_id: str) -> tuple[int, int] | None:
    """The first half of the run's recorded epochs (with the middle one of an odd count), or
    None while it has no presentations: epochs 0..19 give 0..9, epochs 0..2 give 0..1.

    Networks fit the clean, consistent part of the data before they memorise flipped
    labels (Arpit et al. 2017, "A Closer Look at Memorization in Deep Networks"), so early
    predictions vote for a sample's clean class and late ones for the label it was given
    (``benchmarks/results/relabel.md`` compares the windows on the 20 % noise sample run)."""
    recorded = recorded_epochs(store, run_id)
    if recorded is None:
        return None
    return first_half(*recorded)


def suggested_labels(store: Store, run_id: str, epochs: tuple[int, int] | None = None) -> pd.DataFrame:
    """One row per sample of the run with its suggested label and confidence.

    Columns (``SUGGESTED_COLUMNS``): ``sample_id``, ``label`` (the label in the run's sample
    table), ``original_label``, ``label_noisy``, ``suggested_label`` (Int64, NA where the
    sample has no prediction in the window), ``suggested_confidence`` (float in (0, 1],
    NaN likewise), ``window_presentations`` (how many presentations voted).
    ``epochs`` is an inclusive (first, last) range; None takes ``default_relabel_epochs``.
    """
    if epochs is None:
        epochs = default_relabel_epochs(store, run_id) or (0, 0)
    low, high = int(epochs[0]), int(epochs[1])
    if low < 0 or high < low:
        raise ValueError(f"relabel epochs must be 0 <= first <= last, got {low}..{high}")
    materialised = materialised_suggested_labels(store, run_id, (low, high))  # a compacted run's
    if materialised is not None:
        return materialised[list(SUGGESTED_COLUMNS)]
    frame = query_run(
        store, run_id, "suggested_labels", {"epoch_min": low, "epoch_max": high},
        tables=("presentations",),
    )
    frame["suggested_label"] = frame["suggested_label"].astype("Int64")
    frame["suggested_confidence"] = frame["suggested_confidence"].astype(float)
    return frame[list(SUGGESTED_COLUMNS)]
