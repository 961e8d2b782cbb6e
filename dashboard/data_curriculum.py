"""The Curriculum page's own door to the store: which runs scored every sample, suggested
labels for the relabel strategy, and the per-class and weight effects of a curriculum.

Cached like ``dashboard.data`` (keyed by store root, run ids and run versions); the pure
effect functions come from ``store.curriculum`` unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from store.curriculum import Curriculum, CurriculumError
from store.curriculum.effects import class_effect, effective_sample_count, relabel_counts
from store.curriculum.relabel import combine_suggestions, with_suggestions
from store.curriculum.format import list_curricula, load_curriculum
from store.curriculum.unscored import UNSCORED_CHOICES, unscored_mask, unscored_message
from store.errors import StoreError
from store.layout import Store
from store.views.connection import query_summary
from store.views.relabel import default_relabel_epochs as store_default_relabel_epochs
from store.views.relabel import suggested_labels

__all__ = ["UNSCORED_CHOICES", "CurriculumError", "load_saved", "saved_curricula", "saved_path", "class_effect", "default_relabel_epochs", "effective_sample_count",
           "first_fully_scored", "relabel_counts", "suggestions", "unscored_count", "unscored_mask",
           "unscored_message", "with_suggestions"]


@st.cache_data(show_spinner=False, max_entries=256)
def unscored_count(root: str, run_id: str, version: tuple) -> tuple[int, int]:
    """(samples never presented, all samples) of a run's summary; (0, 0) when it cannot be read."""
    del version
    try:
        frame = query_summary(Store(root), run_id, "SELECT count(*) FILTER (WHERE coalesce(presentations, 0) = 0) "
                              "AS unscored, count(*) AS samples FROM summary")
    except (StoreError, FileNotFoundError):
        return 0, 0
    return int(frame["unscored"].iloc[0]), int(frame["samples"].iloc[0])


def first_fully_scored(root: str, run_ids: list[str], versions: list[tuple]) -> str | None:
    """The first of ``run_ids`` (newest first) in which every sample was presented, or None."""
    for run_id, version in zip(run_ids, versions):
        unscored, samples = unscored_count(root, run_id, version)
        if samples and not unscored:
            return run_id
    return None


@st.cache_data(show_spinner=False, max_entries=64)
def default_relabel_epochs(root: str, run_id: str, version: tuple) -> tuple[int, int] | None:
    """The first half of the run's recorded epochs (``store.views.relabel``)."""
    del version
    return store_default_relabel_epochs(Store(root), run_id)


@st.cache_data(show_spinner=False, max_entries=16)
def suggestions(root: str, run_ids: tuple[str, ...], versions: tuple, epochs: tuple[int, int]) -> pd.DataFrame:
    """Suggested label and confidence per sample over ``epochs``, several runs' votes combined."""
    del versions
    store = Store(root)
    return combine_suggestions([suggested_labels(store, run_id, epochs) for run_id in run_ids])


def saved_curricula(root: str) -> list[str]:
    """The file names in the store's ``curricula/`` (saved from this page, the data map's
    selection, or ``trainmap curriculum``), newest first."""
    paths = list_curricula(root)
    return [path.name for path in sorted(paths, key=lambda path: path.stat().st_mtime_ns, reverse=True)]


def saved_path(root: str, name: str) -> Path:
    """Where the saved curriculum ``name`` lives: the store's ``curricula/``."""
    return Path(root) / "curricula" / Path(name).name


def load_saved(root: str, name: str) -> Curriculum:
    """The saved curriculum ``name`` of the store's ``curricula/``, validated like every
    curriculum file; raises ``CurriculumError`` naming what is wrong."""
    return _load_saved(root, Path(name).name, saved_path(root, name).stat().st_mtime_ns)


@st.cache_data(show_spinner=False, max_entries=16)
def _load_saved(root: str, name: str, mtime_ns: int) -> Curriculum:
    del mtime_ns  # the cache key: a file saved again under the same name is read again
    return load_curriculum(Path(root) / "curricula" / name)
