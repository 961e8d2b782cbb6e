"""trainmap's store: run folders of Parquet segments, queried with DuckDB.

The bottom layer: imports neither torch nor streamlit.
"""

from store.errors import RunNotFoundError, StoreError
from store.layout import Store, default_store_path
from store.queries import (
    compact_run,
    dynamics,
    epoch_metrics,
    run_summary,
    runs_table,
    sample_summary,
    trajectory,
)
from store.scores import SCORES, ScoreSpec, cartography_region, hardness, rank_hardest

__all__ = [
    "SCORES",
    "RunNotFoundError",
    "ScoreSpec",
    "Store",
    "StoreError",
    "cartography_region",
    "compact_run",
    "default_store_path",
    "dynamics",
    "epoch_metrics",
    "hardness",
    "rank_hardest",
    "run_summary",
    "runs_table",
    "sample_summary",
    "trajectory",
]
