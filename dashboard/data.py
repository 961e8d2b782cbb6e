"""The dashboard's one door to ``store/``: every read of runs, summaries, views and curricula.

Pages import this module, never ``store``. Every cached query takes the store root, the
run id and the run's *version* (names, mtimes and sizes of its files, :func:`run_version`)
as explicit arguments, so a live run refreshes as soon as a segment lands and a finished
run is read once. The registries and types a page shows (``SCORES``, ``STRATEGIES``,
``Curriculum``, ...) are re-exported from here for the same reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import streamlit as st

from store.curriculum import (
    CARTOGRAPHY,
    PARAMS,
    STRATEGIES,
    Curriculum,
    CurriculumError,
    build_curriculum,
    curriculum_to_bytes,
    fate_table,
    load_curriculum,
    sample_fate,
    save_to_store,
)
from store.curriculum import class_accuracy as store_class_accuracy
from store.errors import StoreError
from store.layout import Store, default_store_path
from store.settings import DATASET_ENCODING_KEY
from store.queries import dataset_inputs, runs_table
from store.queries import epoch_metrics as store_epoch_metrics
from store.queries import sample_summary as store_sample_summary
from store.queries import trajectory as store_trajectory
from store.scores import (
    SCORES,
    output_kind,
    scores_of_kind,
)
from store.views import agreement as agreement_views
from store.views import distributions as distribution_views
from store.views import run as run_views
from store.views import samples as sample_views
from store.views.connection import run_version as store_run_version
from store.views.curriculum_effects import (
    WEIGHT_GROUPS,
    CurriculumPreview,
    curriculum_preview,
    last_epoch_class_accuracy,
    start_epoch_counts,
    weight_map_points,
)
from store.views.results import Agreement, Histogram, Sampled

__all__ = [
    # re-exported from store/ for the pages
    "CARTOGRAPHY", "PARAMS", "SCORES",
    "STRATEGIES", "WEIGHT_GROUPS", "Agreement", "Curriculum", "CurriculumError", "CurriculumPreview",
    "Histogram", "Sampled", "StoreError", "build_curriculum", "curriculum_preview", "curriculum_to_bytes",
    "last_epoch_class_accuracy", "output_kind", "scores_of_kind", "start_epoch_counts", "weight_map_points",
    # this module's own
    "MAX_SCATTER_POINTS", "MAX_STEP_POINTS", "class_accuracy", "check_store", "curriculum_file", "curriculum_weights",
    "data_map", "dataset_path", "dataset_version", "epoch_metrics", "forgetting_counts", "hardest_samples",
    "listing_version", "overview", "presentations_recorded", "recorded_curriculum", "recorded_scores",
    "region_counts", "run_ids", "run_info", "run_version", "runs_frame", "sample_fate_table",
    "sample_id_range", "sample_input", "sample_record", "sample_summary", "save_curriculum",
    "score_agreement", "score_histograms", "stacked_epoch_metrics", "step_curves", "store_root", "trajectory",
]

#: Points sent to the browser by one scatter, at most.
MAX_SCATTER_POINTS = 20_000
#: Points per step curve, at most (bucket means beyond).
MAX_STEP_POINTS = 2_000


# -- the store and the versions that key the caches ----------------------------------


def store_root() -> str:
    """The store the dashboard shows: ``$TRAINMAP_STORE`` (``trainmap ui`` sets it)."""
    return str(default_store_path().resolve())


def check_store(root: str) -> str:
    """``root`` as the store opens it; ``StoreError`` when the path is unusable (a file,
    a store written by a newer trainmap)."""
    return str(Store(root).root)


def listing_version(root: str) -> tuple[tuple[str, int], ...]:
    """(run_id, mtime of run.json) per run: changes when a run starts or reports progress."""
    runs_dir = Store(root).runs_dir
    if not runs_dir.is_dir():
        return ()
    version = []
    for path in sorted(runs_dir.iterdir()):
        try:
            version.append((path.name, (path / "run.json").stat().st_mtime_ns))
        except FileNotFoundError:
            continue
    return tuple(version)


def run_version(root: str, run_id: str) -> tuple:
    """The run's file version (``store.run_version``): the cache key of its queries."""
    return store_run_version(Store(root), run_id)


def run_ids(root: str) -> list[str]:
    return Store(root).run_ids()


def presentations_recorded(root: str, run_id: str) -> bool:
    """Whether any per-sample presentation has been written for the run yet."""
    return bool(Store(root).table_files(run_id, "presentations"))


def dataset_path(root: str, task: str) -> Path | None:
    """Where the store keeps the task's inputs (which may not exist); None when run.json's
    task is no valid dataset name (a path, say: never opened)."""
    try:
        return Store(root).dataset_path(task)
    except StoreError:
        return None


def dataset_version(root: str, task: str) -> int | None:
    """mtime_ns of the task's inputs file (the cache key of :func:`sample_input`); None without one."""
    path = dataset_path(root, task)
    return path.stat().st_mtime_ns if path is not None and path.exists() else None


# -- cached queries (explicit arguments; versions make them refresh) -----------------


@st.cache_data(show_spinner=False, max_entries=16)
def _runs_frame(root: str, version: tuple) -> pd.DataFrame:
    del version
    return runs_table(Store(root))


def runs_frame(root: str, version: tuple) -> pd.DataFrame:
    """The runs table; a run still "running" is looked at again (not cached): one whose
    training process died reads "interrupted" without any of its files changing."""
    frame = _runs_frame(root, version)
    running = frame["status"] == "running"
    if not running.any():
        return frame
    frame = frame.copy()
    store = Store(root)
    frame.loc[running, "status"] = [_state(store, run_id)["status"] for run_id in frame.loc[running, "run_id"]]
    return frame


@st.cache_data(show_spinner=False, max_entries=64)
def _run_info(root: str, run_id: str, version: tuple) -> dict[str, Any]:
    del version
    return Store(root).run_info(run_id)


def run_info(root: str, run_id: str, version: tuple) -> dict[str, Any]:
    """run.json of a run, with a "running" run whose process died read as "interrupted"
    (``store.layout.Store.run_state``, not cached)."""
    info = _run_info(root, run_id, version)
    return _state(Store(root), run_id) if info.get("status") == "running" else info


def _state(store: Store, run_id: str) -> dict[str, Any]:
    try:
        return store.run_state(run_id)
    except StoreError:  # removed or damaged since the listing: left to the page that reads it
        return {"status": "running"}


@st.cache_data(show_spinner=False, max_entries=64)
def epoch_metrics(root: str, run_id: str, version: tuple) -> pd.DataFrame:
    del version
    return store_epoch_metrics(Store(root), run_id)


def stacked_epoch_metrics(root: str, versions: dict[str, tuple]) -> pd.DataFrame:
    """Per-epoch metrics of several runs (``versions``: run_id -> version) stacked, with a
    ``run_id`` column, in the order given."""
    return pd.concat([epoch_metrics(root, run_id, version).assign(run_id=run_id)
                      for run_id, version in versions.items()], ignore_index=True)


@st.cache_data(show_spinner=False, max_entries=64)
def step_curves(root: str, run_id: str, version: tuple, max_points: int = MAX_STEP_POINTS) -> Sampled:
    del version
    return run_views.step_curves(Store(root), run_id, max_points)


@st.cache_data(show_spinner=False, max_entries=64)
def overview(root: str, run_id: str, version: tuple) -> dict[str, Any]:
    """samples, sample_id_min, sample_id_max, recorded_scores (``store.summary_overview``)."""
    del version
    return run_views.summary_overview(Store(root), run_id)


def recorded_scores(root: str, run_id: str, version: tuple) -> list[str]:
    return overview(root, run_id, version)["recorded_scores"]


def sample_id_range(root: str, run_id: str, version: tuple) -> tuple[int, int] | None:
    info = overview(root, run_id, version)
    if info["sample_id_min"] is None:
        return None
    return info["sample_id_min"], info["sample_id_max"]


@st.cache_data(show_spinner=False, max_entries=64)
def data_map(root: str, run_id: str, version: tuple, color: str,
             max_points: int = MAX_SCATTER_POINTS) -> Sampled:
    del version
    return run_views.data_map(Store(root), run_id, color, max_points)


@st.cache_data(show_spinner=False, max_entries=64)
def region_counts(root: str, run_id: str, version: tuple, ambiguous_variability: float,
                  easy_confidence: float) -> pd.DataFrame:
    del version
    return distribution_views.region_counts(Store(root), run_id, ambiguous_variability, easy_confidence)


@st.cache_data(show_spinner=False, max_entries=64)
def score_histograms(root: str, run_id: str, version: tuple, scores: tuple[str, ...],
                     bins: int = 40) -> dict[str, Histogram]:
    del version
    return distribution_views.score_histograms(Store(root), run_id, list(scores), bins)


@st.cache_data(show_spinner=False, max_entries=64)
def forgetting_counts(root: str, run_id: str, version: tuple) -> pd.DataFrame:
    del version
    return distribution_views.forgetting_counts(Store(root), run_id)


@st.cache_data(show_spinner=False, max_entries=128)
def hardest_samples(root: str, run_id: str, version: tuple, score: str, limit: int) -> pd.DataFrame:
    del version
    return sample_views.hardest_samples(Store(root), run_id, score, limit)


@st.cache_data(show_spinner=False, max_entries=256)
def sample_record(root: str, run_id: str, version: tuple, sample_id: int) -> dict | None:
    del version
    return sample_views.sample_record(Store(root), run_id, sample_id)


@st.cache_data(show_spinner=False, max_entries=256)
def trajectory(root: str, run_id: str, version: tuple, sample_id: int) -> pd.DataFrame:
    del version
    return store_trajectory(Store(root), run_id, sample_id)


@st.cache_data(show_spinner=False, max_entries=256)
def sample_input(root: str, task: str, mtime_ns: int, sample_id: int) -> np.ndarray | None:
    del mtime_ns
    inputs = dataset_inputs(Store(root), task, [sample_id])
    return inputs.get(int(sample_id))


@st.cache_data(show_spinner=False, max_entries=64)
def score_agreement(root: str, run_a: str, version_a: tuple, run_b: str, version_b: tuple,
                    score: str, top_fraction: float) -> Agreement:
    del version_a, version_b
    return agreement_views.score_agreement(Store(root), run_a, run_b, score, top_fraction,
                                           MAX_SCATTER_POINTS)


# -- curricula -----------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=16)
def sample_summary(root: str, run_ids: tuple[str, ...], versions: tuple) -> pd.DataFrame:
    """Per-sample summary of one run, or averaged over several (``store.sample_summary``)."""
    del versions
    return store_sample_summary(Store(root), list(run_ids))


@st.cache_data(show_spinner=False, max_entries=32)
def class_accuracy(root: str, run_id: str, version: tuple) -> pd.DataFrame:
    """Validation accuracy per class and epoch (``store.curriculum.class_accuracy``)."""
    del version
    return store_class_accuracy(Store(root), run_id)


def curriculum_file(root: str, recorded: str | None) -> Path | None:
    """The curriculum file a run recorded, or its copy in this store's curricula/ (a store
    copied or moved elsewhere keeps its curricula, not their old absolute paths)."""
    if not recorded:
        return None
    for candidate in (Path(recorded), Path(root) / "curricula" / Path(recorded).name):
        if candidate.is_file():
            return candidate
    return None


def recorded_curriculum(root: str, info: dict[str, Any]) -> Curriculum | None:
    """The curriculum a run (its ``run.json``) was trained with, if its file can be read."""
    path = curriculum_file(root, (info.get("config") or {}).get("curriculum"))
    if path is None:
        return None
    try:
        return load_curriculum(path)
    except CurriculumError:
        return None


def save_curriculum(curriculum: Curriculum, root: str) -> Path:
    """Save a copy into the store's ``curricula/``; return its path."""
    return save_to_store(curriculum, root)


def curriculum_weights(summary: pd.DataFrame, curriculum: Curriculum) -> np.ndarray:
    """The curriculum's weight of each row of ``summary`` (0 for samples it does not list)."""
    return curriculum.weights_for(summary["sample_id"].to_numpy())


def sample_fate_table(parent: pd.DataFrame, rerun: pd.DataFrame, curriculum: Curriculum) -> pd.DataFrame:
    """What happened to the pruned and down-weighted samples, per group and noise flag."""
    return fate_table(sample_fate(parent, rerun, curriculum))


# -- sequences (text samples) --

#: The schema-metadata key of a dataset file whose ``x`` holds the byte values of text, and
#: its value, the text's encoding (``training.pydoc_lm.text_dataset_table`` writes it).
TEXT_ENCODING_KEY = DATASET_ENCODING_KEY


@st.cache_data(show_spinner=False, max_entries=16)
def dataset_text_encoding(root: str, task: str, mtime_ns: int) -> str | None:
    """The encoding of the text whose bytes the task's dataset file stores as ``x``
    (``"utf-8"``), or None for inputs that are not text (or no dataset file)."""
    del mtime_ns
    path = dataset_path(root, task)
    if path is None or not path.exists():
        return None
    metadata = pq.read_schema(path).metadata or {}
    encoding = metadata.get(TEXT_ENCODING_KEY)
    return encoding.decode("ascii") if encoding else None


__all__ += ["TEXT_ENCODING_KEY", "dataset_text_encoding"]


# -- groups --
# The groups (domain, skill, source) a run's batches gave their samples (``store.groups``):
# imported here so that this section of the shared module stays one block.
from store.groups import group_names as store_group_names  # noqa: E402
from store.groups import with_group_names  # noqa: E402
from store.views import groups as group_views  # noqa: E402

#: Curve points of all groups together, at most (bucket means beyond).
MAX_GROUP_CURVE_POINTS = 4_000


@st.cache_data(show_spinner=False, max_entries=64)
def run_groups(root: str, run_id: str, version: tuple) -> list[str]:
    """The names of the run's groups, sorted (empty when its batches gave none)."""
    del version
    return sorted(store_group_names(Store(root), run_id)["group"].astype(str))


@st.cache_data(show_spinner=False, max_entries=64)
def group_loss_curves(root: str, run_id: str, version: tuple,
                      max_points: int = MAX_GROUP_CURVE_POINTS) -> Sampled:
    """Mean loss per group and step, bucket means past ``max_points`` (``store.views.group_loss_curves``)."""
    del version
    return group_views.group_loss_curves(Store(root), run_id, max_points)


@st.cache_data(show_spinner=False, max_entries=64)
def group_epoch_curves(root: str, run_id: str, version: tuple) -> pd.DataFrame:
    """Mean loss, accuracy and token accuracy per group and epoch."""
    del version
    return group_views.group_epoch_curves(Store(root), run_id)


@st.cache_data(show_spinner=False, max_entries=64)
def group_score_boxes(root: str, run_id: str, version: tuple, score: str) -> pd.DataFrame:
    """Each group's quartiles, minimum, maximum and mean of a per-sample score."""
    del version
    return group_views.group_score_boxes(Store(root), run_id, score)


@st.cache_data(show_spinner=False, max_entries=16)
def sample_summary_with_groups(root: str, run_ids: tuple[str, ...], versions: tuple) -> pd.DataFrame:
    """``sample_summary`` with each sample's group name (a ``group`` column when the runs have
    groups): what the group-weights curriculum builds from."""
    return with_group_names(Store(root), list(run_ids), sample_summary(root, run_ids, versions))


__all__ += ["MAX_GROUP_CURVE_POINTS", "group_epoch_curves", "group_loss_curves", "group_score_boxes",
            "run_groups", "sample_summary_with_groups"]
