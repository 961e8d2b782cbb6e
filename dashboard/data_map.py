"""The Run page's reads for the data map as a tool: region cut-offs, predicted and suggested
labels, the rows of a selection and the curriculum made from it, per-layer gradient norms.

Cached like ``dashboard.data``: every read takes the store root, the run id and the run's
version (``data.run_version``) as explicit arguments.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from store.curriculum import save_to_store
from store.layout import Store
from store.scores import REGION_RULE, RegionCutoffs, cartography_region
from store.views import relabel as relabel_views
from store.views import run as run_views
from store.views import samples as sample_views
from store.views.results import Sampled
from store.views.selection import SELECTION_ACTIONS, selection_curriculum

__all__ = [
    "REGION_RULE", "SELECTION_ACTIONS", "RegionCutoffs", "default_relabel_epochs", "layer_grad_norms", "recorded_epochs",
    "region_cutoffs", "sample_labels", "sample_region", "save_selection_curriculum", "selection_csv",
    "selection_rows", "with_labels",
]

#: Points per layer's gradient-norm curve, at most (bucket means beyond).
MAX_LAYER_POINTS = 2_000
#: Columns a table of samples gains from the labels (``with_labels``).
LABEL_COLUMNS = ("predicted_label", "suggested_label", "suggested_confidence")


@st.cache_data(show_spinner=False, max_entries=64)
def region_cutoffs(root: str, run_id: str, version: tuple) -> RegionCutoffs | None:
    """The run's cartography cut-offs (per-run thirds, ``store.region_cutoffs``)."""
    del version
    return run_views.run_region_cutoffs(Store(root), run_id)


def sample_region(confidence: float | None, variability: float | None, cutoffs: RegionCutoffs | None) -> str | None:
    """The region of one sample under the run's ``cutoffs``; None without a confidence."""
    if cutoffs is None:
        return None
    region = cartography_region(pd.Series([confidence], dtype=float), pd.Series([variability], dtype=float),
                                cutoffs).iloc[0]
    return None if pd.isna(region) else str(region)


@st.cache_data(show_spinner=False, max_entries=64)
def layer_grad_norms(root: str, run_id: str, version: tuple, max_points: int = MAX_LAYER_POINTS) -> Sampled:
    """Gradient norm per layer and step (``store.views.run.layer_grad_norm_curves``)."""
    del version
    return run_views.layer_grad_norm_curves(Store(root), run_id, max_points)


@st.cache_data(show_spinner=False, max_entries=32)
def _predicted_labels(root: str, run_id: str, version: tuple) -> pd.DataFrame:
    del version
    return sample_views.predicted_labels(Store(root), run_id)


@st.cache_data(show_spinner=False, max_entries=16)
def recorded_epochs(root: str, run_id: str, version: tuple) -> tuple[int, int] | None:
    """The first and last epoch the run recorded presentations of; None without any."""
    del version
    return relabel_views.recorded_epochs(Store(root), run_id)


@st.cache_data(show_spinner=False, max_entries=16)
def default_relabel_epochs(root: str, run_id: str, version: tuple) -> tuple[int, int] | None:
    """The epochs the suggested labels vote over by default (the first half of the run's)."""
    del version
    return relabel_views.default_relabel_epochs(Store(root), run_id)


@st.cache_data(show_spinner=False, max_entries=32)
def _suggested_labels(root: str, run_id: str, version: tuple, epochs: tuple[int, int] | None) -> pd.DataFrame:
    del version
    return relabel_views.suggested_labels(Store(root), run_id, epochs)


def labels_table(root: str, run_id: str, version: tuple, epochs: tuple[int, int] | None) -> pd.DataFrame:
    """sample_id, predicted_label (last presentation), suggested_label and suggested_confidence
    (most frequent prediction over ``epochs``, ``store.views.relabel``) of every sample."""
    predicted = _predicted_labels(root, run_id, version)
    suggested = _suggested_labels(root, run_id, version, epochs)
    return suggested[["sample_id", "suggested_label", "suggested_confidence"]].merge(
        predicted, on="sample_id", how="left")[["sample_id", *LABEL_COLUMNS]]


def with_labels(frame: pd.DataFrame, root: str, run_id: str, version: tuple,
                epochs: tuple[int, int] | None) -> pd.DataFrame:
    """``frame`` (one row per sample, a sample_id column) with the ``LABEL_COLUMNS`` added."""
    return frame.merge(labels_table(root, run_id, version, epochs), on="sample_id", how="left")


def sample_labels(root: str, run_id: str, version: tuple, sample_id: int,
                  epochs: tuple[int, int] | None) -> dict:
    """predicted_label, suggested_label, suggested_confidence of one sample (NA when unknown)."""
    table = labels_table(root, run_id, version, epochs)
    row = table[table["sample_id"] == int(sample_id)]
    if row.empty:
        return {name: pd.NA for name in LABEL_COLUMNS}
    return {name: row.iloc[0][name] for name in LABEL_COLUMNS}


@st.cache_data(show_spinner=False, max_entries=32)
def selection_rows(root: str, run_id: str, version: tuple, sample_ids: tuple[int, ...]) -> pd.DataFrame:
    """The summary rows (labels and every score) of the selected samples, by sample_id."""
    del version
    return sample_views.samples_by_id(Store(root), run_id, sample_ids)


def selection_csv(sample_ids: tuple[int, ...]) -> bytes:
    """The selection as a one-column CSV (``sample_id``), for download."""
    return pd.DataFrame({"sample_id": sorted(sample_ids)}).to_csv(index=False).encode()


@st.cache_data(show_spinner=False, max_entries=16)
def _all_sample_ids(root: str, run_id: str, version: tuple) -> np.ndarray:
    del version
    return sample_views.sample_ids(Store(root), run_id)


def save_selection_curriculum(root: str, run_id: str, version: tuple, task: str | None,
                              selected: tuple[int, ...], action: str, weight: float,
                              name: str | None) -> Path:
    """Build the selection's curriculum (``store.views.selection``) over every sample of the
    run and save it into the store's curricula/ as ``<name>.parquet`` (characters other than
    letters, digits, '.', '_' and '-' become '-'; a taken name gets a suffix), or under a
    time-stamped name; return its path."""
    curriculum = selection_curriculum(_all_sample_ids(root, run_id, version), selected, action, weight,
                                      source_run=run_id, task=task, name=name or None)
    filename = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip(".")[:100] + ".parquet" if name else None
    return save_to_store(curriculum, root, filename if filename != ".parquet" else None)
