"""Per-sample views of a run: the hardest samples by a score, one sample's record, the id range,
the class each sample was last predicted as, and the rows of a set of samples."""

from __future__ import annotations

from typing import Any, Sequence

import duckdb
import numpy as np
import pandas as pd

from store.compaction import materialised_predicted_labels
from store.errors import StoreError

from store.layout import Store
from store.scores import get_score
from store.views.connection import cursor, hardness_sql, query_summary

#: Score columns every hardest-samples table carries beside the ranking score (NULL where
#: the run's output kind does not record them: token accuracy outside sequences, all but
#: the loss in a per-sample-loss run).
TABLE_COLUMNS = ("loss", "el2n", "forgetting_events", "confidence", "aum", "token_accuracy")


def hardest_samples(store: Store, run_id: str, score: str, limit: int = 20) -> pd.DataFrame:
    """The ``limit`` hardest samples by ``score``, in the registry's direction.

    Never-learned samples come first for scores that say so; samples without a value last;
    ties keep sample_id order (as ``store.rank_hardest``).
    """
    columns = ["sample_id", "label", "original_label", "label_noisy", get_score(score).name]
    columns += [name for name in TABLE_COLUMNS if name not in columns]
    columns += ["never_learned"]
    select = ", ".join(f'"{name}"' for name in columns)
    key = hardness_sql(score)
    return query_summary(
        store,
        run_id,
        f"""
        SELECT {select}
        FROM summary
        ORDER BY CASE WHEN isnan({key}) THEN NULL ELSE {key} END DESC NULLS LAST, sample_id
        LIMIT $limit
        """,
        {"limit": int(limit)},
    )


def sample_record(store: Store, run_id: str, sample_id: int) -> dict[str, Any] | None:
    """One sample's summary row (labels and every score), or None if the run lacks it."""
    frame = query_summary(
        store, run_id, "SELECT * FROM summary WHERE sample_id = $sample_id",
        {"sample_id": int(sample_id)},
    )
    if frame.empty:
        return None
    return frame.iloc[0].to_dict()


def sample_id_range(store: Store, run_id: str) -> tuple[int, int] | None:
    """The smallest and largest sample_id of the run, or None while it has no samples."""
    frame = query_summary(store, run_id, "SELECT min(sample_id) AS low, max(sample_id) AS high FROM summary")
    if frame["low"].isna().iloc[0]:
        return None
    return int(frame["low"].iloc[0]), int(frame["high"].iloc[0])


def predicted_labels(store: Store, run_id: str) -> pd.DataFrame:
    """The class each sample was predicted as at its last presentation (columns sample_id,
    predicted_label; Int64, NA where the run recorded no prediction, e.g. a per-sample loss).
    A compacted run answers from the labels its compaction materialised (the same SQL)."""
    materialised = materialised_predicted_labels(store, run_id)
    if materialised is not None:
        return materialised
    files = store.table_files(run_id, "presentations")
    if not files:
        return pd.DataFrame({"sample_id": pd.Series([], dtype="int64"),
                             "predicted_label": pd.Series([], dtype="Int64")})
    con = cursor()
    try:
        con.register("presentations", con.read_parquet([str(path) for path in files]))
        frame = con.execute(
            "SELECT sample_id, arg_max(pred, step) AS predicted_label "
            "FROM presentations GROUP BY sample_id ORDER BY sample_id"
        ).df()
    except duckdb.Error as error:
        raise StoreError(f"cannot read the predictions of run {run_id!r}: {error}") from error
    finally:
        con.close()
    frame["predicted_label"] = frame["predicted_label"].astype("Int64")
    return frame


def samples_by_id(store: Store, run_id: str, sample_ids: Sequence[int]) -> pd.DataFrame:
    """The summary rows of ``sample_ids`` (labels and every score), in sample_id order; ids
    the run lacks are left out."""
    ids = sorted({int(sample_id) for sample_id in sample_ids})
    return query_summary(
        store, run_id,
        "SELECT * FROM summary WHERE sample_id IN (SELECT unnest($ids)) ORDER BY sample_id",
        {"ids": ids},
    )


def sample_ids(store: Store, run_id: str) -> np.ndarray:
    """Every sample_id of the run (its summary's rows), ascending."""
    frame = query_summary(store, run_id, "SELECT sample_id FROM summary ORDER BY sample_id")
    return frame["sample_id"].to_numpy(dtype=np.int64)
