"""Two runs side by side: how much they agree on a score, sample by sample (joined in DuckDB)."""

from __future__ import annotations

import math

import duckdb
import pandas as pd

from store.errors import StoreError
from store.layout import Store
from store.views.connection import cursor, hardness_sql, register_summary, score_column
from store.views.results import DEFAULT_MAX_POINTS, Agreement, Sampled


def score_agreement(
    store: Store,
    run_a: str,
    run_b: str,
    score: str,
    top_fraction: float = 0.1,
    max_points: int = DEFAULT_MAX_POINTS,
    seed: int = 0,
) -> Agreement:
    """Per-sample agreement of ``score`` between two runs, joined on sample_id.

    Spearman's rho is the Pearson correlation of average ranks of the registry's hardness
    key (so never-learned samples rank hardest where the score says so); top-k overlap is
    |hardest_k(A) ∩ hardest_k(B)| / k with k = round(top_fraction · common samples).
    """
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    column, key = score_column(score), hardness_sql(score)
    con = cursor()
    try:
        for name, run_id in (("summary_a", run_a), ("summary_b", run_b)):
            register_summary(con, store, run_id, name)
        con.execute(
            f"""
            CREATE TEMP TABLE joined AS
            WITH a AS (SELECT sample_id, label_noisy, {column}::DOUBLE AS value, {key} AS hardness
                       FROM summary_a),
                 b AS (SELECT sample_id, {column}::DOUBLE AS value, {key} AS hardness
                       FROM summary_b)
            SELECT a.sample_id, a.label_noisy, a.value AS value_a, b.value AS value_b,
                   a.hardness AS hardness_a, b.hardness AS hardness_b
            FROM a JOIN b USING (sample_id)
            WHERE a.hardness IS NOT NULL AND b.hardness IS NOT NULL
              AND NOT isnan(a.hardness) AND NOT isnan(b.hardness)
            """
        )
        common = int(con.execute("SELECT count(*) FROM joined").fetchone()[0])
        if common == 0:
            empty = pd.DataFrame(columns=["sample_id", "label_noisy", "value_a", "value_b"])
            return Agreement(score, None, 0, 0, None, Sampled(empty, 0, "all"))
        # Twice the average rank of a tie group = its first rank + its last (cume_dist · n):
        # one sort per run, where a count over each tie group would hash 1 M groups more.
        rho = con.execute(
            """
            WITH ranked AS (
                SELECT rank() OVER by_a + cume_dist() OVER by_a * $n AS rank_a,
                       rank() OVER by_b + cume_dist() OVER by_b * $n AS rank_b
                FROM joined
                WINDOW by_a AS (ORDER BY hardness_a), by_b AS (ORDER BY hardness_b)
            )
            SELECT corr(rank_a, rank_b) FROM ranked
            """,
            {"n": common},
        ).fetchone()[0]
        top_k = max(1, round(top_fraction * common))
        overlap = con.execute(
            """
            WITH top_a AS (SELECT sample_id FROM joined
                           ORDER BY hardness_a DESC, sample_id LIMIT $k),
                 top_b AS (SELECT sample_id FROM joined
                           ORDER BY hardness_b DESC, sample_id LIMIT $k)
            SELECT count(*) FROM top_a JOIN top_b USING (sample_id)
            """,
            {"k": top_k},
        ).fetchone()[0]
        points = con.execute(
            """
            SELECT sample_id, label_noisy, value_a, value_b FROM joined
            WHERE value_a IS NOT NULL AND value_b IS NOT NULL
            ORDER BY hash(sample_id, $seed) LIMIT $limit
            """,
            {"seed": int(seed), "limit": int(max_points)},
        ).df()
        plotted = int(con.execute(
            "SELECT count(*) FROM joined WHERE value_a IS NOT NULL AND value_b IS NOT NULL"
        ).fetchone()[0])
    except duckdb.Error as error:
        raise StoreError(f"cannot compare runs {run_a!r} and {run_b!r}: {error}") from error
    finally:
        con.close()
    rho_value = None if rho is None or (isinstance(rho, float) and math.isnan(rho)) else float(rho)
    points = points.sort_values("sample_id", kind="stable").reset_index(drop=True)
    return Agreement(
        score,
        rho_value,
        common,
        top_k,
        overlap / top_k,
        Sampled(points, plotted, "all" if len(points) == plotted else "random sample"),
    )
