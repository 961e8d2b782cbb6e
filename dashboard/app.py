"""trainmap dashboard entry point (``streamlit run dashboard/app.py``)."""

from __future__ import annotations

import streamlit as st

from store import Store, default_store_path, runs_table

st.set_page_config(page_title="trainmap", layout="wide")
store = Store(default_store_path())
st.title("trainmap runs")
st.caption(f"store: {store.root}")
table = runs_table(store) if store.root.exists() else None
if table is None or table.empty:
    st.info("No runs yet. Train one with `trainmap train --task mnist1d --model cnn`.")
else:
    st.dataframe(table, hide_index=True)
