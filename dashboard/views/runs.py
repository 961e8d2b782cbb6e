"""Runs page: every run of the store in a sortable, filterable table; open or compare."""

from __future__ import annotations

import streamlit as st

from dashboard import data, data_faults, formatting, widgets

root, runs = widgets.listing_page("Runs")


@st.fragment(run_every=widgets.LIVE_REFRESH_SECONDS if (runs["status"] == "running").any() else None)
def runs_view() -> None:
    current = data.runs_frame(root, data.listing_version(root))
    counts = current["status"].value_counts()
    cols = st.columns(5)
    cols[0].metric("Runs", len(current))
    cols[1].metric("Running", int(counts.get("running", 0)))
    cols[2].metric("Finished", int(counts.get("finished", 0)))
    cols[3].metric("Failed", int(counts.get("failed", 0)))
    cols[4].metric("Interrupted", int(counts.get("interrupted", 0)))
    for run_id, problem in data_faults.unreadable_runs(root, data.listing_version(root)).items():
        st.warning(f"Run {formatting.md_text(run_id)} is left out: {formatting.md_text(problem)}")
    for row in current[current["status"].isin(["failed", "interrupted"])].itertuples():
        info = data.run_info(root, row.run_id, data.listing_version(root))
        st.warning(f"Run **{formatting.md_text(row.name)}** ({formatting.md_text(row.run_id)}) {row.status}: "
                   f"{formatting.md_text(info.get('error') or 'no error recorded')}")

    shown = formatting.runs_overview(current)
    filter_cols = st.columns([2, 1, 1, 1])
    text = filter_cols[0].text_input("Filter by name or id", key="runs_filter",
                                     placeholder="e.g. noise20")
    tasks = filter_cols[1].multiselect("Task", sorted(shown["task"].dropna().unique()), key="runs_task")
    models = filter_cols[2].multiselect("Model", sorted(shown["model"].dropna().unique()), key="runs_model")
    statuses = filter_cols[3].multiselect("Status", ["running", "finished", "failed", "interrupted"], key="runs_status")
    mask = shown["name"].astype(str).str.contains(text, case=False, regex=False) | \
        shown["run_id"].str.contains(text, case=False, regex=False)
    if tasks:
        mask &= shown["task"].isin(tasks)
    if models:
        mask &= shown["model"].isin(models)
    if statuses:
        mask &= current.set_index("run_id").loc[shown["run_id"], "status"].isin(statuses).to_numpy()
    shown = shown[mask].reset_index(drop=True)
    st.caption(f"{len(shown)} of {len(current)} runs · click a column header to sort · "
               "tick rows to open or compare them")

    event = st.dataframe(
        shown,
        key="runs_table",
        on_select="rerun",
        selection_mode="multi-row",
        hide_index=True,
        width="stretch",
        column_config={
            "label noise": st.column_config.NumberColumn(format="percent"),
            "best val acc": st.column_config.NumberColumn(format="percent"),
            "seed": st.column_config.NumberColumn(format="plain"),
            "epochs": st.column_config.NumberColumn(format="plain"),
            "run_id": st.column_config.TextColumn("run id"),
        },
    )
    selected = list(shown.iloc[event.selection.rows]["run_id"]) if event.selection.rows else []
    buttons = st.columns([1, 1, 4])
    if buttons[0].button("Open run", type="primary", disabled=len(selected) != 1,
                         help="Tick exactly one row"):
        st.switch_page(widgets.PAGE_RUN, query_params={"run": selected[0]})
    if buttons[1].button("Compare runs", disabled=len(selected) < 2, help="Tick two or more rows"):
        st.switch_page(widgets.PAGE_COMPARE, query_params={"runs": selected})
    if selected:
        buttons[2].caption("selected: " + ", ".join(shown.set_index("run_id").loc[selected, "name"]))


runs_view()
