"""Curriculum page, outcome: a finished rerun beside its parent (metrics, curves, per class,
what happened to the pruned and down-weighted samples)."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, formatting


def show_outcome(root: str, parent_id: str, rerun_id: str, curriculum: data.Curriculum | None, key: str) -> None:
    st.subheader("Outcome: rerun vs parent")
    versions = {run_id: data.run_version(root, run_id) for run_id in (parent_id, rerun_id)}
    infos = {run_id: data.run_info(root, run_id, versions[run_id]) for run_id in (parent_id, rerun_id)}
    labels = {parent_id: f"parent · {infos[parent_id].get('name')}",
              rerun_id: f"rerun · {infos[rerun_id].get('name')}"}
    st.dataframe(formatting.outcome_table(infos, labels), hide_index=True)
    curves = data.stacked_epoch_metrics(root, versions)
    left, right = st.columns(2)
    left.plotly_chart(charts.compare_epochs_figure(curves, "val_accuracy", labels), key=f"{key}_acc")
    right.plotly_chart(charts.compare_epochs_figure(curves, "val_loss", labels), key=f"{key}_loss")
    table = data.last_epoch_class_accuracy(
        {labels[run_id]: data.class_accuracy(root, run_id, versions[run_id]) for run_id in infos})
    if table is not None:
        st.markdown("**Validation accuracy per class (last epoch)**")
        st.dataframe(table, hide_index=True)
    else:
        st.caption("No per-class validation accuracy recorded for these runs.")
    if curriculum is not None:
        parent = data.sample_summary(root, (parent_id,), (versions[parent_id],))
        rerun = data.sample_summary(root, (rerun_id,), (versions[rerun_id],))
        fate = data.sample_fate_table(parent, rerun, curriculum)
        st.markdown("**What happened to the pruned and down-weighted samples** (mean confidence = p_true, "
                    "correctness and mean loss, parent vs rerun, where recorded; pruned samples are never "
                    "presented in the rerun)")
        st.dataframe(fate, hide_index=True)
