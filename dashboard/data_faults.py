"""Runs the store holds but cannot read (a damaged run.json): their id and why, so that the
Runs page names them while it lists the others."""

from __future__ import annotations

import streamlit as st

from store import Store, StoreError


@st.cache_data(show_spinner=False, max_entries=16)
def unreadable_runs(root: str, version: tuple) -> dict[str, str]:
    """run id -> the one-line ``StoreError`` of its run.json, for each run that cannot be
    read; ``version`` is ``data.listing_version(root)`` (the cache key)."""
    del version
    store = Store(root)
    problems = {}
    for run_id in store.run_ids():
        try:
            store.run_info(run_id)
        except StoreError as error:
            problems[run_id] = str(error)
    return problems
