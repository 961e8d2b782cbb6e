"""trainmap's store: run folders of Parquet segments, queried with DuckDB.

The bottom layer: imports neither torch nor streamlit.
"""

from store.errors import RunNotFoundError, StoreError
from store.curriculum import (
    STRATEGIES,
    Curriculum,
    CurriculumError,
    build_curriculum,
    load_curriculum,
    save_curriculum,
)
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
    "STRATEGIES",
    "Curriculum",
    "CurriculumError",
    "build_curriculum",
    "load_curriculum",
    "save_curriculum",
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

# Dashboard views (aggregated DuckDB queries); imported here for ``from store import ...``.
from store.queries import dataset_inputs, steps  # noqa: E402
from store.views import (  # noqa: E402
    Agreement,
    Histogram,
    Sampled,
    data_map,
    epoch_curves,
    forgetting_counts,
    hardest_samples,
    recorded_scores,
    region_counts,
    run_version,
    sample_count,
    sample_id_range,
    sample_record,
    score_agreement,
    score_histogram,
    score_histograms,
    step_curves,
    summary_overview,
)

__all__ += [
    "Agreement",
    "Histogram",
    "Sampled",
    "data_map",
    "dataset_inputs",
    "epoch_curves",
    "forgetting_counts",
    "hardest_samples",
    "recorded_scores",
    "region_counts",
    "run_version",
    "sample_count",
    "sample_id_range",
    "sample_record",
    "score_agreement",
    "score_histogram",
    "score_histograms",
    "step_curves",
    "steps",
    "summary_overview",
]
