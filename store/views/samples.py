"""Per-sample views of a run: the hardest samples by a score, one sample's record, the id range."""

from __future__ import annotations

from typing import Any

import pandas as pd

from store.layout import Store
from store.scores import get_score
from store.views.connection import hardness_sql, query_summary

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
