"""Shared dashboard helpers: the store, cached queries, the run picker, URL state, formatting.

The one module that talks to ``store/`` for the pages. Every cached query takes the
store root, the run id and the run's *version* (names, mtimes and sizes of its files,
``store.run_version``) as explicit arguments, so a live run refreshes as soon as a
segment lands and a finished run is read once.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import streamlit as st

import store as store_api
from store import Store, StoreError

logger = logging.getLogger(__name__)

#: Seconds between refreshes of a view of a running run.
LIVE_REFRESH_SECONDS = 2.0
#: Points sent to the browser by one scatter, at most.
MAX_SCATTER_POINTS = 20_000
#: Points per step curve, at most (bucket means beyond).
MAX_STEP_POINTS = 2_000

#: The page scripts, relative to ``app.py``. The folder is ``views/``, not ``pages/``: a
#: ``pages/`` folder next to the entry script would put Streamlit in its legacy multipage
#: mode instead of routing through ``app.py``'s ``st.navigation``.
PAGE_RUNS = "views/runs.py"
PAGE_RUN = "views/run.py"
PAGE_COMPARE = "views/compare.py"
PAGE_CURRICULUM = "views/curriculum.py"


# -- the store -----------------------------------------------------------------------


def store_root() -> str:
    """The store the dashboard shows: ``$TRAINMAP_STORE`` (``trainmap ui`` sets it)."""
    return str(store_api.default_store_path().resolve())


def open_store() -> Store:
    """The store, or a warning and a stopped page when the path is unusable."""
    root = store_root()
    try:
        return Store(root)
    except StoreError as error:
        st.warning(f"Cannot open the store: {error}")
        st.stop()
        raise  # unreachable: st.stop raises


def listing_version(root: str) -> tuple[tuple[str, int], ...]:
    """(run_id, mtime of run.json) per run: changes when a run starts or reports progress."""
    runs_dir = Path(root) / "runs"
    if not runs_dir.is_dir():
        return ()
    version = []
    for path in sorted(runs_dir.iterdir()):
        try:
            version.append((path.name, (path / "run.json").stat().st_mtime_ns))
        except FileNotFoundError:
            continue
    return tuple(version)


def run_version(store: Store, run_id: str) -> tuple:
    return store_api.run_version(store, run_id)


@contextmanager
def friendly_errors(what: str) -> Iterator[None]:
    """Show a store or query failure as a warning instead of a traceback.

    Streamlit's own control flow (``st.stop``, ``st.rerun``, ``st.switch_page``) derives
    from ``BaseException`` and passes through untouched.
    """
    try:
        yield
    except (StoreError, ValueError, OSError) as error:
        logger.warning("%s failed: %s", what, error)
        st.warning(f"Could not show {what}: {error}")
    except Exception as error:  # noqa: BLE001 - last line of defence: never a traceback
        logger.exception("%s failed", what)
        st.error(f"Could not show {what} ({type(error).__name__}: {error}). "
                 "The data on disk is unchanged; reload the page to retry.")


# -- cached queries (explicit arguments; versions make them refresh) -----------------


@st.cache_data(show_spinner=False, max_entries=16)
def runs_frame(root: str, version: tuple) -> pd.DataFrame:
    del version
    return store_api.runs_table(Store(root))


@st.cache_data(show_spinner=False, max_entries=64)
def run_info(root: str, run_id: str, version: tuple) -> dict[str, Any]:
    del version
    return Store(root).run_info(run_id)


@st.cache_data(show_spinner=False, max_entries=64)
def epoch_metrics(root: str, run_id: str, version: tuple) -> pd.DataFrame:
    del version
    return store_api.epoch_metrics(Store(root), run_id)


@st.cache_data(show_spinner=False, max_entries=64)
def step_curves(root: str, run_id: str, version: tuple, max_points: int = MAX_STEP_POINTS):
    del version
    return store_api.step_curves(Store(root), run_id, max_points)


@st.cache_data(show_spinner=False, max_entries=64)
def overview(root: str, run_id: str, version: tuple) -> dict[str, Any]:
    """samples, sample_id_min, sample_id_max, recorded_scores (``store.summary_overview``)."""
    del version
    return store_api.summary_overview(Store(root), run_id)


def recorded_scores(root: str, run_id: str, version: tuple) -> list[str]:
    return overview(root, run_id, version)["recorded_scores"]


@st.cache_data(show_spinner=False, max_entries=64)
def data_map(root: str, run_id: str, version: tuple, color: str,
             max_points: int = MAX_SCATTER_POINTS):
    del version
    return store_api.data_map(Store(root), run_id, color, max_points)


@st.cache_data(show_spinner=False, max_entries=64)
def region_counts(root: str, run_id: str, version: tuple, ambiguous_variability: float,
                  easy_confidence: float) -> pd.DataFrame:
    del version
    return store_api.region_counts(Store(root), run_id, ambiguous_variability, easy_confidence)


@st.cache_data(show_spinner=False, max_entries=64)
def score_histograms(root: str, run_id: str, version: tuple, scores: tuple[str, ...], bins: int = 40):
    del version
    return store_api.score_histograms(Store(root), run_id, list(scores), bins)


@st.cache_data(show_spinner=False, max_entries=64)
def forgetting_counts(root: str, run_id: str, version: tuple) -> pd.DataFrame:
    del version
    return store_api.forgetting_counts(Store(root), run_id)


@st.cache_data(show_spinner=False, max_entries=128)
def hardest_samples(root: str, run_id: str, version: tuple, score: str, limit: int) -> pd.DataFrame:
    del version
    return store_api.hardest_samples(Store(root), run_id, score, limit)


@st.cache_data(show_spinner=False, max_entries=256)
def sample_record(root: str, run_id: str, version: tuple, sample_id: int) -> dict | None:
    del version
    return store_api.sample_record(Store(root), run_id, sample_id)


def sample_id_range(root: str, run_id: str, version: tuple) -> tuple[int, int] | None:
    info = overview(root, run_id, version)
    if info["sample_id_min"] is None:
        return None
    return info["sample_id_min"], info["sample_id_max"]


@st.cache_data(show_spinner=False, max_entries=256)
def trajectory(root: str, run_id: str, version: tuple, sample_id: int) -> pd.DataFrame:
    del version
    return store_api.trajectory(Store(root), run_id, sample_id)


@st.cache_data(show_spinner=False, max_entries=256)
def sample_input(root: str, task: str, mtime_ns: int, sample_id: int) -> np.ndarray | None:
    del mtime_ns
    inputs = store_api.dataset_inputs(Store(root), task, [sample_id])
    return inputs.get(int(sample_id))


@st.cache_data(show_spinner=False, max_entries=64)
def score_agreement(root: str, run_a: str, version_a: tuple, run_b: str, version_b: tuple,
                    score: str, top_fraction: float):
    del version_a, version_b
    return store_api.score_agreement(Store(root), run_a, run_b, score, top_fraction,
                                     MAX_SCATTER_POINTS)


# -- formatting ----------------------------------------------------------------------


def status_label(status: str | None, epochs_done: Any, max_epochs: Any) -> str:
    """"running · epoch 3/20", "finished", "failed"."""
    if status == "running":
        done = 0 if pd.isna(epochs_done) else int(epochs_done)
        total = "?" if max_epochs is None or pd.isna(max_epochs) else int(max_epochs)
        return f"running · epoch {done}/{total}"
    return str(status or "unknown")


def run_label(info: dict[str, Any] | pd.Series) -> str:
    """"cnn-noise20-s0 (20261124-124321-2855a1)"."""
    name = info.get("name") or "unnamed"
    return f"{name} ({info.get('run_id')})"


def percent(value: Any, digits: int = 1) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{100 * float(value):.{digits}f} %"


def number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or pd.isna(value):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{float(value):.{digits}f}"


def runs_overview(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table as shown: status with live progress, parent by name, newest first."""
    if runs.empty:
        return runs
    names = dict(zip(runs["run_id"], runs["name"]))
    shown = pd.DataFrame({
        "name": runs["name"],
        "status": [status_label(s, d, m) for s, d, m in
                   zip(runs["status"], runs["epochs_done"], runs["max_epochs"])],
        "task": runs["task"],
        "model": runs["model"],
        "seed": runs["seed"],
        "label noise": runs["label_noise"].astype(float),
        "epochs": runs["epochs_done"],
        "best val acc": runs["best_val_accuracy"].astype(float),
        "parent run": [names.get(parent, parent) if parent else None for parent in runs["parent_run_id"]],
        "curriculum": [Path(c).name if isinstance(c, str) and c else None for c in runs["curriculum"]],
        "created": runs["created_at"],
        "run_id": runs["run_id"],
    })
    return shown.sort_values("created", ascending=False, kind="stable").reset_index(drop=True)


# -- URL state -----------------------------------------------------------------------


def url_synced_choice(key: str, options: list[str], default: str | None) -> None:
    """Prepare ``st.session_state[key]`` for a widget whose value mirrors ``?key=`` in the URL.

    A value arriving in the URL (a shared link, a page switch) wins over the widget's
    remembered value; an unknown value falls back to ``default``. Call before creating
    the widget, and :func:`write_url` with its value after.
    """
    from_url = st.query_params.get(key)
    last_written = st.session_state.get(f"_url_{key}")
    if from_url is not None and from_url != last_written and from_url in options:
        st.session_state[key] = from_url
    elif st.session_state.get(key) not in options:
        st.session_state[key] = default


def url_synced_multichoice(key: str, options: list[str], default: list[str]) -> None:
    """As :func:`url_synced_choice` for a multiselect (``?key=a&key=b``)."""
    from_url = [value for value in st.query_params.get_all(key) if value in options]
    last_written = st.session_state.get(f"_url_{key}")
    current = st.session_state.get(key)
    if from_url and from_url != last_written:
        st.session_state[key] = from_url
    elif current is None or any(value not in options for value in current):
        st.session_state[key] = [value for value in default if value in options]


def write_url(key: str, value: str | list[str] | None) -> None:
    """Mirror a widget's value into the URL (or drop the parameter when empty)."""
    st.session_state[f"_url_{key}"] = value
    if value is None or value == []:
        if key in st.query_params:
            del st.query_params[key]
    elif st.query_params.get_all(key) != ([value] if isinstance(value, str) else list(value)):
        st.query_params[key] = value


def pick_run(store: Store, runs: pd.DataFrame, key: str = "run", label: str = "Run") -> str | None:
    """A run picker whose choice lives in ``?run=``; defaults to the newest run."""
    if runs.empty:
        return None
    run_ids = list(runs.sort_values("created_at", ascending=False, kind="stable")["run_id"])
    labels = {row.run_id: f"{row.name} · {status_label(row.status, row.epochs_done, row.max_epochs)}"
              for row in runs.itertuples()}
    url_synced_choice(key, run_ids, run_ids[0])
    run_id = st.selectbox(label, run_ids, key=key, format_func=lambda r: labels.get(r, r))
    write_url(key, run_id)
    return run_id


def selected_points(chart_key: str) -> list[dict[str, Any]]:
    """The points selected in a ``st.plotly_chart(..., key=chart_key, on_select=...)``."""
    state = st.session_state.get(chart_key)
    if not state:
        return []
    try:
        return list(state["selection"]["points"])
    except (KeyError, TypeError):
        return []


def first_custom_id(points: list[dict[str, Any]]) -> int | None:
    """The sample_id carried in ``customdata`` of the first selected point."""
    for point in points:
        data = point.get("customdata")
        if data is None:
            continue
        if isinstance(data, dict):
            # A row of a 2-D customdata array arrives from the browser as {"0": id, "1": ...}.
            value = data.get("0", data.get(0))
        elif isinstance(data, (list, tuple)):
            value = data[0] if data else None
        else:
            value = data
        try:
            return int(value)
        except (TypeError, ValueError):
            continue
    return None


def live_interval(status: str | None) -> float | None:
    """Refresh period of a run's view: only while it is running."""
    return LIVE_REFRESH_SECONDS if status == "running" else None


def page_header(title: str, store: Store) -> None:
    st.title(title)
    st.caption(f"store `{store.root}`")


def empty_store_message(store: Store) -> None:
    st.info(
        f"No runs in `{store.root}` yet. Train one with "
        "`trainmap train --task mnist1d --model cnn --epochs 20 --store "
        f"{store.root}`; it appears here while it trains."
    )


def listing_page(title: str) -> tuple[Store, str, pd.DataFrame]:
    """Open the store, show the page header, and list the runs; an empty store shows
    how to make a run and ends the page there. Returns (store, root, runs)."""
    store = open_store()
    root = str(store.root)
    page_header(title, store)
    runs = runs_frame(root, listing_version(root))
    if runs.empty:
        empty_store_message(store)
        st.stop()
    return store, root, runs


def call_guarded(function: Callable[[], None], what: str) -> None:
    with friendly_errors(what):
        function()
