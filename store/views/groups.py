"""Per-group views of one run: loss curves per group over steps and epochs, and each
group's spread of a per-sample score, all aggregated in DuckDB (``store.groups``).

A run of many steps and groups gives at most ``max_points`` curve points in all (bucket
means past that), and a score's spread is five numbers per group (the box of a box plot),
never the samples themselves.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from store.errors import StoreError
from store.groups import group_epoch_metrics, group_names, group_step_loss, name_column
from store.layout import Store
from store.views.connection import score_column, summary_cursor
from store.views.results import Sampled

#: Curve points sent to the browser for all groups together, at most.
DEFAULT_MAX_CURVE_POINTS = 4_000


def group_loss_curves(store: Store, run_id: str, max_points: int = DEFAULT_MAX_CURVE_POINTS) -> Sampled:
    """Mean loss of each group's presentations per step (``store.groups.group_step_loss``):
    one curve per group, bucket means over equal step buckets when all groups together
    would have more than ``max_points`` points. ``total``: the steps the rows cover, summed
    over groups (the points of per-step curves when every group is in every step; counting
    the (group, step) pairs exactly would cost more than the curves)."""
    groups = max(1, len(group_names(store, run_id)))
    frame = group_step_loss(store, run_id, max_buckets=max(1, int(max_points) // groups))
    total = int((frame["step_end"] - frame["step"] + 1).sum()) if len(frame) else 0
    return Sampled(frame, total, "all" if (frame["step_end"] == frame["step"]).all() else "bucket means")


def group_epoch_curves(store: Store, run_id: str) -> pd.DataFrame:
    """Mean loss, accuracy and token accuracy per group and epoch (``store.groups.group_epoch_metrics``)."""
    return group_epoch_metrics(store, run_id)


def group_score_boxes(store: Store, run_id: str, score: str) -> pd.DataFrame:
    """Each group's spread of a per-sample ``score`` (the run's summary): ``group, group_id,
    samples, low, q1, median, q3, high, mean`` (``low``/``high`` the minimum and maximum;
    quartiles interpolated), one row per group with a value, sorted by name."""
    value = f"{score_column(score)}::DOUBLE"
    con = summary_cursor(store, run_id)
    try:
        frame = con.execute(
            f"""
            SELECT group_id, count(*) AS samples, min({value}) AS low,
                   quantile_cont({value}, 0.25) AS q1, median({value}) AS median,
                   quantile_cont({value}, 0.75) AS q3, max({value}) AS high, avg({value}) AS mean
            FROM summary
            WHERE group_id IS NOT NULL AND {value} IS NOT NULL AND NOT isnan({value})
            GROUP BY group_id
            """
        ).df()
    except duckdb.Error as error:
        raise StoreError(f"cannot summarise {score} per group in run {run_id!r}: {error}") from error
    finally:
        con.close()
    names = group_names(store, run_id).set_index("group_id")["group"]
    frame["group_id"] = frame["group_id"].astype(np.int64)
    frame.insert(0, "group", name_column(frame["group_id"], names))
    return frame.sort_values("group", kind="stable").reset_index(drop=True)
