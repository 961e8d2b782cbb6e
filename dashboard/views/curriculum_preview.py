"""Curriculum page, preview: what a curriculum does to the source run's samples before it is
saved or launched (counts, per class, per region, weights on the data map)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data


def show_preview(summary: pd.DataFrame, curriculum: data.Curriculum) -> None:
    weight = data.curriculum_weights(summary, curriculum)
    preview = data.curriculum_preview(summary, weight)
    facts = curriculum.summary()
    cols = st.columns(5)
    cols[0].metric("Samples", f"{facts['samples']:,}")
    cols[1].metric("Kept", f"{facts['kept']:,}")
    cols[2].metric("Pruned", f"{facts['pruned']:,}")
    cols[3].metric("Flipped labels pruned", f"{preview.flipped_pruned} / {preview.flipped}")
    cols[4].metric("Flipped labels down-weighted", f"{preview.flipped_down_weighted}")
    if curriculum.online:
        st.info(f"Online rule **{curriculum.online['rule']}** {curriculum.online['params']}: applied while the "
                "rerun trains; the file's weights are all 1.")
    starts = data.start_epoch_counts(curriculum.table)
    if starts is not None:
        st.caption("Samples becoming available per epoch: " + ", ".join(f"epoch {e}: {n}" for e, n in starts.items()))
    has_labels = bool(summary["label"].notna().any())
    has_map = bool(summary["confidence"].notna().any())
    left, right = st.columns(2)
    left.markdown("**Kept per class**")
    if has_labels:
        left.dataframe(preview.kept_per_class, hide_index=True)
    else:
        left.caption("No class labels in these runs (sequences or per-sample losses): nothing to count per class.")
    right.markdown("**Kept per cartography region**")
    if has_map:
        right.dataframe(preview.kept_per_region, hide_index=True)
    else:
        right.caption("No cartography regions: these runs recorded no p(label).")
    left, right = st.columns(2)
    left.plotly_chart(charts.weight_histogram_figure(preview.weight), key="cur_weight_hist")
    if has_map:
        points, sizes = data.weight_map_points(summary, preview.weight, data.MAX_SCATTER_POINTS)
        right.plotly_chart(charts.weight_map_figure(points, sizes), key="cur_data_map")
    else:
        right.plotly_chart(charts.weight_loss_figure(summary["loss"].to_numpy(dtype=float, na_value=float("nan")),
                                                     preview.weight), key="cur_loss_map")
