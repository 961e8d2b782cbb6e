"""Streamlit helpers every page shares: the page list, opening the store, URL state, the
run picker, selections in charts, live refresh, headers and error display.

No store access of its own: what the store holds comes through ``dashboard.data``.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.formatting import md_text, status_label

logger = logging.getLogger(__name__)

#: Seconds between refreshes of a view of a running run.
LIVE_REFRESH_SECONDS = 2.0

#: The page scripts, relative to ``app.py``. The folder is ``views/``, not ``pages/``: a
#: ``pages/`` folder next to the entry script would put Streamlit in its legacy multipage
#: mode instead of routing through ``app.py``'s ``st.navigation``.
PAGE_RUNS = "views/runs.py"
PAGE_RUN = "views/run.py"
PAGE_COMPARE = "views/compare.py"
PAGE_CURRICULUM = "views/curriculum.py"


# -- the store and errors ------------------------------------------------------------


def open_store() -> str:
    """The root of the store the dashboard shows, or a warning and a stopped page when
    the path is unusable."""
    try:
        return data.check_store(data.store_root())
    except data.StoreError as error:
        st.warning(f"Cannot open the store: {error}")
        st.stop()
        raise  # unreachable: st.stop raises


@contextmanager
def friendly_errors(what: str) -> Iterator[None]:
    """Show a store or query failure as a warning instead of a traceback.

    Streamlit's own control flow (``st.stop``, ``st.rerun``, ``st.switch_page``) derives
    from ``BaseException`` and passes through untouched.
    """
    try:
        yield
    except (data.StoreError, ValueError, OSError) as error:
        logger.warning("%s failed: %s", what, error)
        st.warning(f"Could not show {what}: {error}")
    except Exception as error:  # noqa: BLE001 - last line of defence: never a traceback
        logger.exception("%s failed", what)
        st.error(f"Could not show {what} ({type(error).__name__}: {error}). "
                 "The data on disk is unchanged; reload the page to retry.")


def page_header(title: str, root: str) -> None:
    st.title(title)
    st.caption(f"store `{root}`")


def empty_store_message(root: str) -> None:
    st.info(
        f"No runs in `{root}` yet. Train one with "
        "`trainmap train --task mnist1d --model cnn --epochs 20 --store "
        f"{root}`; it appears here while it trains."
    )


def listing_page(title: str) -> tuple[str, pd.DataFrame]:
    """Open the store, show the page header, and list the runs; an empty store shows
    how to make a run and ends the page there. Returns (store root, runs)."""
    root = open_store()
    page_header(title, root)
    runs = data.runs_frame(root, data.listing_version(root))
    if runs.empty:
        empty_store_message(root)
        st.stop()
    return root, runs


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


def pick_run(runs: pd.DataFrame, key: str = "run", label: str = "Run") -> str | None:
    """A run picker whose choice lives in ``?run=``; defaults to the newest run."""
    if runs.empty:
        return None
    run_ids = list(runs.sort_values("created_at", ascending=False, kind="stable")["run_id"])
    labels = {row.run_id: f"{row.name} · {status_label(row.status, row.epochs_done, row.max_epochs)}"
              for row in runs.itertuples()}
    asked = st.query_params.get(key)
    if asked is not None and asked not in run_ids and asked != st.session_state.get(f"_url_{key}"):
        # A link to a run this store does not have (deleted, another store, a typo): say so
        # rather than silently showing another run.
        st.warning(f"No run {md_text(repr(asked[:80]))} in this store; showing the newest run instead.")
    url_synced_choice(key, run_ids, run_ids[0])
    run_id = st.selectbox(label, run_ids, key=key, format_func=lambda r: labels.get(r, r))
    write_url(key, run_id)
    return run_id


# -- selections and refresh ----------------------------------------------------------


def selected_points(chart_key: str) -> list[dict[str, Any]]:
    """The points selected in a ``st.plotly_chart(..., key=chart_key, on_select=...)``."""
    state = st.session_state.get(chart_key)
    if not state:
        return []
    try:
        return list(state["selection"]["points"])
    except (KeyError, TypeError):
        return []


def selected_box(chart_key: str) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The (x range, y range) of the box last dragged on the chart ``chart_key``, low to high; None without one."""
    state = st.session_state.get(chart_key)
    try:
        box = state["selection"]["box"][-1]
        (x0, x1), (y0, y1) = box["x"], box["y"]
    except (KeyError, TypeError, IndexError, ValueError):
        return None
    return (min(x0, x1), max(x0, x1)), (min(y0, y1), max(y0, y1))


def first_custom_id(points: list[dict[str, Any]]) -> int | None:
    """The sample_id carried in ``customdata`` of the first selected point."""
    for point in points:
        custom = point.get("customdata")
        if custom is None:
            continue
        if isinstance(custom, dict):
            # A row of a 2-D customdata array arrives from the browser as {"0": id, "1": ...}.
            value = custom.get("0", custom.get(0))
        elif isinstance(custom, (list, tuple)):
            value = custom[0] if custom else None
        else:
            value = custom
        try:
            return int(value)
        except (TypeError, ValueError):
            continue
    return None


def live_interval(status: str | None) -> float | None:
    """Refresh period of a run's view: only while it is running."""
    return LIVE_REFRESH_SECONDS if status == "running" else None
