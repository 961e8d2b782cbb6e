"""Curriculum page, preview: what a curriculum does to the source run's samples before it is
saved or launched: counts, the effective sample count, each class's share of the training
weight (with a warning under a chosen floor), relabelled samples, weight distributions of
flipped and clean samples, per region, weights on the data map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import charts, charts_curriculum, data, data_curriculum

#: the default of the per-class warning: a class whose share of the training weight falls
#: below this multiple of its share of the samples is named
DEFAULT_CLASS_WARNING = 0.5


def _flipped(summary: pd.DataFrame) -> np.ndarray | None:
    if "label_noisy" not in summary:
        return None
    flipped = summary["label_noisy"].fillna(False).to_numpy(bool)
    return flipped if flipped.any() else None


def _class_section(summary: pd.DataFrame, weight: np.ndarray, strategy_kind: str | None) -> None:
    st.markdown("**Per class**")
    floor = float(st.number_input(
        "Warn when a class's share of the training weight falls below this multiple of its share of the samples",
        min_value=0.0, max_value=1.0, value=DEFAULT_CLASS_WARNING, step=0.05, key="cur_class_warning",
        help="1 = every class keeps its proportion; 0.5 = a class may lose up to half of its share"))
    effect = data_curriculum.class_effect(summary, weight, floor)
    if effect.empty:
        st.caption("No class labels in these runs (sequences or per-sample losses): nothing to count per class.")
        return
    below = effect[effect["below_floor"]]
    if not below.empty:
        lines = [f"class {int(row.label)} keeps {int(row.kept):,} of {int(row.samples):,} samples "
                 f"({row.kept_share:.0%}) and {row.weight_share:.1%} of the training weight, "
                 f"{row.weight_ratio:.2f} of its share" for row in below.itertuples()]
        advice = (" Set class_floor (a per-class floor; 1 = class-stratified) to guarantee every class its share."
                  if strategy_kind == "prune" else "")
        st.warning(f"{len(below)} class(es) below {floor:g} of their share: " + "; ".join(lines) + "." + advice)
    left, right = st.columns(2)
    shown = effect.rename(columns={"kept_share": "kept share", "weight_share": "weight share",
                                   "sample_share": "sample share", "weight_ratio": "weight / sample share",
                                   "below_floor": "below floor"})
    left.dataframe(shown, hide_index=True, column_config={
        "kept share": st.column_config.NumberColumn(format="percent"),
        "weight share": st.column_config.NumberColumn(format="percent"),
        "sample share": st.column_config.NumberColumn(format="percent"),
        "weight / sample share": st.column_config.NumberColumn(format="%.2f"),
    })
    right.plotly_chart(charts_curriculum.class_effect_figure(effect, floor), key="cur_class_effect")


def _relabel_section(summary: pd.DataFrame, curriculum: data.Curriculum) -> None:
    labels = curriculum.table.set_index("sample_id")["label"].reindex(summary["sample_id"])
    labels = labels.fillna(summary["label"].set_axis(labels.index)).to_numpy()
    counts = data_curriculum.relabel_counts(summary, labels)
    cols = st.columns(3)
    cols[0].metric("Labels replaced", f"{counts['replaced']:,}")
    if counts["flipped"]:
        cols[1].metric("Flipped labels given their clean label", f"{counts['flipped_fixed']:,} / {counts['flipped']:,}")
        cols[2].metric("Clean labels changed", f"{counts['clean_broken']:,}")


def show_preview(summary: pd.DataFrame, curriculum: data.Curriculum, strategy_kind: str | None = None) -> None:
    weight = data.curriculum_weights(summary, curriculum)
    preview = data.curriculum_preview(summary, weight)
    facts = curriculum.summary()
    flipped = _flipped(summary)
    binary = bool(np.isin(weight, (0.0, 1.0)).all())
    cols = st.columns(5)
    cols[0].metric("Samples", f"{facts['samples']:,}")
    cols[1].metric("Kept", f"{facts['kept']:,}")
    cols[2].metric("Pruned", f"{facts['pruned']:,}")
    cols[3].metric("Effective sample count", f"{data_curriculum.effective_sample_count(weight):,.0f}",
                   help="Kish: (sum of weights)^2 / sum of squared weights; the number of equally weighted "
                        "samples that carry as much information")
    if flipped is not None and binary:
        cols[4].metric("Flipped labels pruned", f"{preview.flipped_pruned:,} / {preview.flipped:,}")
    elif flipped is not None:
        cols[4].metric("Mean weight: flipped / clean",
                       f"{weight[flipped].mean():.2f} / {weight[~flipped].mean():.2f}")
    unscored = (curriculum.metadata.get("unscored") or {})
    if unscored:
        st.caption(f"{unscored['samples']:,} samples never presented in the source run(s) are "
                   f"{'kept' if unscored['treatment'] == 'keep' else 'pruned'}, outside the ranking.")
    if curriculum.online:
        st.info(f"Online rule **{curriculum.online['rule']}** {curriculum.online['params']}: applied while the "
                "rerun trains; the file's weights are all 1.")
    if "label" in curriculum.table:
        _relabel_section(summary, curriculum)
    starts = data.start_epoch_counts(curriculum.table)
    if starts is not None:
        st.caption("Samples becoming available per epoch: " + ", ".join(f"epoch {e}: {n}" for e, n in starts.items()))
    _class_section(summary, weight, strategy_kind)
    has_map = bool(summary["confidence"].notna().any())
    left, right = st.columns(2)
    left.plotly_chart(charts_curriculum.weight_distributions_figure(weight, flipped), key="cur_weight_hist")
    if has_map and binary:
        points, sizes = data.weight_map_points(summary, preview.weight, data.MAX_SCATTER_POINTS)
        right.plotly_chart(charts.weight_map_figure(points, sizes), key="cur_data_map")
    elif has_map:
        right.markdown("**Kept per cartography region**")
        right.dataframe(preview.kept_per_region, hide_index=True)
        right.caption("Weights vary continuously here: the distributions on the left say who is down-weighted.")
    else:
        right.caption("No cartography regions: these runs recorded no p(label).")
        right.plotly_chart(charts.weight_loss_figure(summary["loss"].to_numpy(dtype=float, na_value=float("nan")),
                                                     preview.weight), key="cur_loss_map")
    if has_map and binary:
        with st.expander("Kept per cartography region"):
            st.dataframe(preview.kept_per_region, hide_index=True)
