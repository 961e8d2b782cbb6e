"""The dashboard's reads for a rerun's verdict: every run's run.json, each run's metrics,
the parent's sibling seeds and their reruns (``store.views.verdict``), cached like
``dashboard.data`` (keyed by the store root, the run id and the run's version)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data
from store.errors import StoreError
from store.layout import Store
from store.views import verdict as verdict_views
from store.views.verdict import HEADLINE_METRIC, METRIC_BY_NAME, METRICS, NOISE_MULTIPLIER, Metric

__all__ = ["HEADLINE_METRIC", "METRICS", "METRIC_BY_NAME", "NOISE_MULTIPLIER", "Metric", "RerunVerdict",
           "rerun_curriculum_path", "rerun_verdict", "run_infos", "run_metrics", "training_totals"]


@st.cache_data(show_spinner=False, max_entries=16)
def run_infos(root: str, listing_version: tuple) -> list[dict[str, Any]]:
    """run.json of every run of the store (``data.listing_version`` keys it); runs that
    cannot be read (removed or damaged since the listing) are left out."""
    del listing_version
    store = Store(root)
    infos = []
    for run_id in store.run_ids():
        try:
            infos.append(store.run_info(run_id))
        except StoreError:
            continue
    return infos


@st.cache_data(show_spinner=False, max_entries=64)
def training_totals(root: str, run_id: str, version: tuple) -> verdict_views.TrainingTotals:
    """Steps and samples presented of a run (``store.views.verdict.training_totals``)."""
    del version
    return verdict_views.training_totals(Store(root), run_id)


def run_metrics(root: str, run_id: str) -> dict[str, float | None]:
    """Every verdict metric of a run (``store.views.verdict.run_metrics``)."""
    version = data.run_version(root, run_id)
    return verdict_views.run_metrics(data.run_info(root, run_id, version), training_totals(root, run_id, version))


def rerun_curriculum_path(root: str, rerun_id: str) -> Path | None:
    """The curriculum file a rerun trained on, its copy in this store's ``curricula/`` first
    (where the jobs queue takes it from), else where run.json recorded it; None when neither exists."""
    info = data.run_info(root, rerun_id, data.run_version(root, rerun_id))
    recorded = (info.get("config") or {}).get("curriculum")
    if not recorded:
        return None
    in_store = Path(root) / "curricula" / Path(recorded).name
    return in_store if in_store.is_file() else data.curriculum_file(root, recorded)


@dataclass(frozen=True)
class RerunVerdict:
    """A rerun beside its parent, against the spread of the parent's seeds."""

    #: the parent first, then its sibling seeds (``store.views.verdict.sibling_seeds``)
    seed_run_ids: tuple[str, ...]
    #: run_id -> name, of every run named here
    names: dict[str, str]
    #: ``store.views.verdict.verdict_table``
    table: pd.DataFrame
    #: ``store.views.verdict.class_verdict_table``; None without per-class accuracy
    class_table: pd.DataFrame | None
    #: seed run_id -> its rerun of the same curriculum and settings (the rerun for the parent)
    seed_reruns: dict[str, str]
    #: ``store.views.verdict.paired_table`` over ``seed_reruns``; None with fewer than 2 pairs
    paired: pd.DataFrame | None

    @property
    def seeds_without_rerun(self) -> tuple[str, ...]:
        return tuple(run_id for run_id in self.seed_run_ids if run_id not in self.seed_reruns)


def rerun_verdict(root: str, parent_id: str, rerun_id: str) -> RerunVerdict:
    """The verdict on ``rerun_id`` against ``parent_id`` and the parent's sibling seeds."""
    infos = run_infos(root, data.listing_version(root))
    parent = data.run_info(root, parent_id, data.run_version(root, parent_id))
    rerun = data.run_info(root, rerun_id, data.run_version(root, rerun_id))
    siblings = verdict_views.sibling_seeds(parent, infos)
    seed_ids = (parent_id, *(info["run_id"] for info in siblings))
    reruns = {seed: info["run_id"] for seed, info in verdict_views.seed_reruns(rerun, seed_ids, infos).items()}
    metrics = {run_id: run_metrics(root, run_id) for run_id in {*seed_ids, rerun_id, *reruns.values()}}
    table = verdict_views.verdict_table(metrics[parent_id], metrics[rerun_id], [metrics[s] for s in seed_ids])
    classes = {run_id: data.class_accuracy(root, run_id, data.run_version(root, run_id))
               for run_id in (*seed_ids, rerun_id)}
    class_table = verdict_views.class_verdict_table(classes[parent_id], classes[rerun_id],
                                                    [classes[s] for s in seed_ids])
    paired = (verdict_views.paired_table([(metrics[seed], metrics[other]) for seed, other in reruns.items()])
              if len(reruns) >= 2 else None)
    names = {info["run_id"]: str(info.get("name") or info["run_id"]) for info in (*infos, parent, rerun)}
    return RerunVerdict(seed_run_ids=seed_ids, names=names, table=table, class_table=class_table,
                        seed_reruns=reruns, paired=paired)
