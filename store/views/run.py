"""One run at a glance: its sample count and recorded scores, its step curves, its data map
and the cut-offs of its regions, its per-layer gradient norms.

Small, aggregated answers from big runs: a bucketed step curve and a deterministic
random sample of at most ``max_points`` points, asked of DuckDB, never a whole table in
pandas (timings: benchmarks/results/dashboard.md).
"""

from __future__ import annotations

from typing import Any

import duckdb
import pandas as pd

from store.errors import StoreError
from store.layout import Store
from store.scores import SCORES, RegionCutoffs, region_cutoffs
from store.views.connection import cursor, query_summary, score_column
from store.views.results import DEFAULT_MAX_POINTS, Sampled


def _recorded_counts_sql(names: list[str]) -> str:
    """``count(...) AS "<score>"`` per score: its values that are not NaN."""
    return ", ".join(
        f"count({score_column(name)}) FILTER (WHERE NOT isnan({score_column(name)}::DOUBLE)) AS \"{name}\""
        for name in names
    )


def sample_count(store: Store, run_id: str) -> int:
    """Training samples of the run (rows of its summary)."""
    return int(query_summary(store, run_id, "SELECT count(*) AS n FROM summary")["n"].iloc[0])


def recorded_scores(store: Store, run_id: str) -> list[str]:
    """Registered scores that have at least one value in this run (e.g. no GraNd unless scheduled)."""
    names = list(SCORES)
    counts = query_summary(store, run_id, f"SELECT {_recorded_counts_sql(names)} FROM summary").iloc[0]
    return [name for name in names if int(counts[name]) > 0]


def summary_overview(store: Store, run_id: str) -> dict[str, Any]:
    """samples, sample_id_min, sample_id_max and recorded_scores of a run, in one query."""
    names = list(SCORES)
    row = query_summary(store, run_id, "SELECT count(*) AS samples, min(sample_id) AS low, "
                        f"max(sample_id) AS high, {_recorded_counts_sql(names)} FROM summary").iloc[0]
    samples = int(row["samples"])
    return {
        "samples": samples,
        "sample_id_min": None if samples == 0 else int(row["low"]),
        "sample_id_max": None if samples == 0 else int(row["high"]),
        "recorded_scores": [name for name in names if int(row[name]) > 0],
    }


def step_curves(store: Store, run_id: str, max_points: int = 2_000) -> Sampled:
    """Loss, gradient norm and learning rate per step; bucket means past ``max_points`` steps."""
    files = store.table_files(run_id, "steps")
    empty = pd.DataFrame(columns=["step", "epoch", "loss", "grad_norm", "lr"])
    if not files:
        return Sampled(empty, 0, "all")
    con = cursor()
    try:
        con.register("steps", con.read_parquet([str(path) for path in files]))
        total = int(con.execute("SELECT count(*) FROM steps").fetchone()[0])
        if total <= max_points:
            frame = con.execute(
                "SELECT step, epoch, loss, grad_norm, lr FROM steps ORDER BY step"
            ).df()
            return Sampled(frame, total, "all")
        frame = con.execute(
            """
            WITH bounds AS (SELECT min(step) AS low, max(step) AS high FROM steps)
            SELECT
                min(step) AS step, min(epoch) AS epoch, avg(loss) AS loss,
                avg(grad_norm) AS grad_norm, avg(lr) AS lr
            FROM steps, bounds
            GROUP BY floor((step - low) * $buckets / (high - low + 1))
            ORDER BY step
            """,
            {"buckets": int(max_points)},
        ).df()
        return Sampled(frame, total, "bucket means")
    except duckdb.Error as error:
        raise StoreError(f"cannot read the steps of run {run_id!r}: {error}") from error
    finally:
        con.close()


def data_map(
    store: Store,
    run_id: str,
    color: str = "correctness",
    max_points: int = DEFAULT_MAX_POINTS,
    seed: int = 0,
) -> Sampled:
    """Dataset-cartography points: variability, confidence and ``color`` per sample.

    At most ``max_points`` samples, a deterministic random sample (hash of sample_id and
    ``seed``) when there are more. Samples not presented yet are left out.
    """
    color_column = score_column(color)
    where = "confidence IS NOT NULL AND NOT isnan(confidence)"
    total = int(query_summary(store, run_id, f"SELECT count(*) AS n FROM summary WHERE {where}")["n"].iloc[0])
    frame = query_summary(
        store,
        run_id,
        f"""
        SELECT sample_id, label, original_label, label_noisy, confidence, variability,
               {color_column}::DOUBLE AS color_value
        FROM summary
        WHERE {where}
        ORDER BY hash(sample_id, $seed)
        LIMIT $limit
        """,
        {"seed": int(seed), "limit": int(max_points)},
    )
    frame = frame.sort_values("sample_id", kind="stable").reset_index(drop=True)
    return Sampled(frame, total, "all" if len(frame) == total else "random sample")


def run_region_cutoffs(store: Store, run_id: str) -> RegionCutoffs | None:
    """The run's cartography cut-offs (``store.region_cutoffs``: per-run thirds over every
    scored sample, never a random sample of them); None while no sample has a confidence."""
    frame = query_summary(
        store, run_id,
        "SELECT confidence, variability FROM summary "
        "WHERE confidence IS NOT NULL AND NOT isnan(confidence) "
        "AND variability IS NOT NULL AND NOT isnan(variability)",
    )
    if frame.empty:
        return None
    return region_cutoffs(frame["confidence"], frame["variability"])


def layer_grad_norm_curves(store: Store, run_id: str, max_points: int = 2_000) -> Sampled:
    """Gradient norm per layer and step (columns step, layer, grad_norm); past ``max_points``
    steps, each layer's means over equal step buckets. ``total`` counts the recorded steps."""
    files = store.table_files(run_id, "layer_grad_norms")
    empty = pd.DataFrame(columns=["step", "layer", "grad_norm"])
    if not files:
        return Sampled(empty, 0, "all")
    con = cursor()
    try:
        con.register("layer_grad_norms", con.read_parquet([str(path) for path in files]))
        total = int(con.execute("SELECT count(DISTINCT step) FROM layer_grad_norms").fetchone()[0])
        if total <= max_points:
            frame = con.execute(
                "SELECT step, layer, grad_norm FROM layer_grad_norms ORDER BY layer, step").df()
            return Sampled(frame, total, "all")
        frame = con.execute(
            """
            WITH bounds AS (SELECT min(step) AS low, max(step) AS high FROM layer_grad_norms)
            SELECT min(step) AS step, layer, avg(grad_norm) AS grad_norm
            FROM layer_grad_norms, bounds
            GROUP BY layer, floor((step - low) * $buckets / (high - low + 1))
            ORDER BY layer, step
            """,
            {"buckets": int(max_points)},
        ).df()
        return Sampled(frame, total, "bucket means")
    except duckdb.Error as error:
        raise StoreError(f"cannot read the per-layer gradient norms of run {run_id!r}: {error}") from error
    finally:
        con.close()
