"""trainmap's store: run folders of Parquet segments, queried with DuckDB.

The bottom layer: imports neither torch nor streamlit. The names below are imported on
first use (PEP 562), so that a process that needs only ``store.layout`` (the recording
writer process) does not import pandas, DuckDB and the curriculum code
(``tests/store/test_recording.py`` checks what the writer process loads).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RunNotFoundError": "store.errors",
    "StoreError": "store.errors",
    "STRATEGIES": "store.curriculum",
    "Curriculum": "store.curriculum",
    "CurriculumError": "store.curriculum",
    "build_curriculum": "store.curriculum",
    "load_curriculum": "store.curriculum",
    "save_curriculum": "store.curriculum",
    "Store": "store.layout",
    "default_store_path": "store.layout",
    "compact_run": "store.queries",
    "dynamics": "store.queries",
    "epoch_metrics": "store.queries",
    "run_summary": "store.queries",
    "runs_table": "store.queries",
    "sample_summary": "store.queries",
    "trajectory": "store.queries",
    "SCORES": "store.scores",
    "ScoreSpec": "store.scores",
    "cartography_region": "store.scores",
    "RegionCutoffs": "store.scores",
    "region_cutoffs": "store.scores",
    "suggested_labels": "store.views.relabel",
    "hardness": "store.scores",
    "rank_hardest": "store.scores",
    "dataset_inputs": "store.queries",
    "steps": "store.queries",
    "Agreement": "store.views.results",
    "Histogram": "store.views.results",
    "Sampled": "store.views.results",
    "run_version": "store.views.connection",
    "data_map": "store.views.run",
    "recorded_scores": "store.views.run",
    "sample_count": "store.views.run",
    "step_curves": "store.views.run",
    "summary_overview": "store.views.run",
    "forgetting_counts": "store.views.distributions",
    "region_counts": "store.views.distributions",
    "score_histogram": "store.views.distributions",
    "score_histograms": "store.views.distributions",
    "hardest_samples": "store.views.samples",
    "sample_id_range": "store.views.samples",
    "sample_record": "store.views.samples",
    "score_agreement": "store.views.agreement",
    "group_scores": "store.groups",
    "group_step_loss": "store.groups",
    "group_epoch_metrics": "store.groups",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'store' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
