"""Run page, data map: the cartography scatter with its region cut-offs drawn, the counts per
region, and a box or lasso selection that can be listed, downloaded or made a curriculum.

Past ``data_density.density_threshold()`` samples the map is a density of every sample
(bins counted in DuckDB); a box dragged on it (or typed as ranges) is drilled into: at most
``data_density.REGION_MAX_POINTS`` of its samples drawn as the points map, where a click
opens a sample and a box or lasso is the selection as below."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, charts_map, data, data_density, data_map, formatting, widgets
from dashboard.views.run_samples import SAMPLE_KEY, RunView, choose_sample, sample_view

CHART_KEY = "data_map_chart"
DENSITY_KEY = "data_map_density"
#: The region's ranges (variability from / to, confidence from / to), typed or from a box.
REGION_KEYS = ("map_region_variability_low", "map_region_variability_high",
               "map_region_confidence_low", "map_region_confidence_high")
#: Columns of the selection's table, the map's two coordinates first.
SELECTION_COLUMNS = ("sample_id", "confidence", "variability", "correctness", "predicted_label",
                     "suggested_label", "label", "label_noisy", "forgetting_events", "aum", "loss")
ACTION_LABELS = {
    "drop": "Drop the selection (weight 0)",
    "down-weight": "Down-weight the selection",
    "keep-only": "Keep only the selection",
}


def custom_ids(points: list[dict]) -> list[int]:
    """The sample_ids carried in the ``customdata`` of selected points (the first entry of
    each point's customdata; points without one, like the chosen-sample ring, are skipped)."""
    ids = []
    for point in points:
        value = widgets.first_custom_id([point])
        if value is not None:
            ids.append(value)
    return sorted(set(ids))


def map_selection() -> tuple[int, ...]:
    """The samples of the current box or lasso selection on the map (empty for a click)."""
    state = st.session_state.get(CHART_KEY)
    if not state:
        return ()
    selection = state.get("selection") or {}
    if not (selection.get("box") or selection.get("lasso")):
        return ()
    return tuple(custom_ids(list(selection.get("points") or [])))


def on_map_select() -> None:
    if not map_selection():  # a click picks one sample; a box or lasso is a selection
        choose_sample(widgets.first_custom_id(widgets.selected_points(CHART_KEY)))


def cutoff_controls(view: RunView, container, cutoffs: data_map.RegionCutoffs) -> tuple[float, float]:
    """The run's own cut-offs, or the user's when they set them by hand."""
    manual = container.toggle("Set cut-offs by hand", key="map_manual_cutoffs",
                              help="Off: the run's per-run thirds. " + data_map.REGION_RULE)
    if not manual:
        return cutoffs.ambiguous_variability, cutoffs.easy_confidence
    cols = st.columns(2)
    ambiguous = cols[0].slider("Ambiguous if variability >", 0.0, 0.5,
                               round(cutoffs.ambiguous_variability, 3), 0.005, key="map_ambiguous")
    easy = cols[1].slider("Else easy if confidence ≥ (else hard)", 0.0, 1.0,
                          round(cutoffs.easy_confidence, 3), 0.005, key="map_easy")
    return ambiguous, easy


def data_map_view(view: RunView) -> None:
    root, run_id, version = view.root, view.run_id, view.version
    cutoffs = data_map.region_cutoffs(root, run_id, version)
    if "confidence" not in view.scores or cutoffs is None:
        # Nothing to plot: no p(label) recorded (a per-sample-loss run) or no sample presented yet.
        st.info(formatting.data_map_unavailable(view.kind))
        sample_view(view, context="map")
        return
    controls = st.columns([2, 2, 3])
    color_options = list(dict.fromkeys(name for name in ("correctness", *view.scores) if name in view.scores))
    color = controls[0].selectbox("Colour by", color_options, key="map_color",
                                  format_func=lambda name: name.replace("_", " "))
    ambiguous, easy = cutoff_controls(view, controls[1], cutoffs)
    if data.overview(root, run_id, version)["samples"] > data_density.density_threshold():
        density_map_view(view, color, (ambiguous, easy), cutoffs, controls[2])
        return
    points = data.data_map(root, run_id, version, color)
    left, right = st.columns([3, 1])
    with left:
        if points.total == 0:
            st.info("No sample has been presented yet.")
        else:
            figure = charts.data_map_figure(points.frame, color, points.total, points.method,
                                            st.session_state.get(SAMPLE_KEY), cutoffs=(ambiguous, easy))
            st.plotly_chart(figure, key=CHART_KEY, on_select=on_map_select,
                            selection_mode=("points", "box", "lasso"), config={"scrollZoom": True})
            st.caption("Click a point to inspect that sample; drag a box or a lasso (chart toolbar) to select "
                       "several. Crosses mark flipped labels. Dashed lines: the region cut-offs."
                       + (f" Showing a random {points.shown:,} of {points.total:,} samples, sampled in DuckDB: "
                          "a selection covers the drawn points only." if points.is_partial else ""))
            if view.kind == "sequence":
                st.caption("Confidence is each sequence's mean p(target token) over epochs. " + view.definition)
    with right:
        region_metrics(view, cutoffs, ambiguous, easy)
    selected = map_selection()
    if selected:
        selection_panel(view, selected, points.is_partial, points.total)
    sample_view(view, context="map")


def region_metrics(view: RunView, cutoffs: data_map.RegionCutoffs, ambiguous: float, easy: float) -> None:
    """The samples per cartography region (every sample, counted in DuckDB) and the rule."""
    counts = data.region_counts(view.root, view.run_id, view.version, ambiguous, easy)
    st.subheader("Regions")
    for row in counts.itertuples():
        st.metric(row.region, f"{row.samples:,}", help=f"{row.flipped:,} of them with a flipped label")
    own = (ambiguous, easy) == (cutoffs.ambiguous_variability, cutoffs.easy_confidence)
    st.caption(("Cut-offs: " + data_map.REGION_RULE if own else "Cut-offs set by hand")
               + f" — here variability > {ambiguous:.3f} is ambiguous; below it, confidence ≥ {easy:.3f} "
               "is easy-to-learn. Swayamdipta et al. 2020: easy-to-learn (confident, stable), ambiguous "
               "(variable), hard-to-learn (unconfident, stable; often mislabeled).")


def on_density_select() -> None:
    """A box dragged on the density becomes the region's ranges (the number inputs)."""
    box = widgets.selected_box(DENSITY_KEY)
    if box is not None:
        (x_low, x_high), (y_low, y_high) = box
        for key, value in zip(REGION_KEYS, (x_low, x_high, y_low, y_high)):
            st.session_state[key] = round(float(value), 4)


def region_inputs() -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The region typed or dragged: (variability range, confidence range), None until all four are set."""
    cols = st.columns(4)
    labels = ("Variability from", "Variability to", "Confidence from", "Confidence to")
    values = [col.number_input(label, value=None, step=0.01, format="%.4f", key=key, placeholder="drag a box")
              for col, label, key in zip(cols, labels, REGION_KEYS)]
    if any(value is None for value in values):
        return None
    x_low, x_high, y_low, y_high = (float(value) for value in values)
    return (min(x_low, x_high), max(x_low, x_high)), (min(y_low, y_high), max(y_low, y_high))


def density_map_view(view: RunView, color: str, cut: tuple[float, float], cutoffs: data_map.RegionCutoffs,
                     container) -> None:
    """The data map of a big run: every sample binned, the region cut-offs drawn, a region drilled into."""
    root, run_id, version = view.root, view.run_id, view.version
    density = data_density.map_density(root, run_id, version, color)
    options = ["samples", "mean score"] + (["flipped-label share"] if density.bins["flipped"].any() else [])
    colour = container.radio("Colour the bins by", options, horizontal=True, key="map_density_colour",
                             format_func=lambda option: f"mean {color.replace('_', ' ')}" if option == "mean score"
                             else option)
    left, right = st.columns([3, 1])
    with left:
        figure = charts_map.density_figure(
            density.bins, density.x_bins, density.y_bins, density.x_range, density.y_range, colour,
            "Data map (density)", "variability", "confidence",
            note=formatting.density_note(density.total, density.x_bins, density.y_bins),
            score_name=color.replace("_", " "))
        charts_map.add_region_cutoffs(figure, *cut)
        st.plotly_chart(figure, key=DENSITY_KEY, on_select=on_density_select, selection_mode=("box",))
        st.caption(formatting.density_caption(density.total, data_density.density_threshold(),
                                              density.x_bins * density.y_bins, data_density.REGION_MAX_POINTS)
                   + " Or type the four ranges below. Dashed lines: the region cut-offs.")
        region = region_inputs()
    with right:
        region_metrics(view, cutoffs, *cut)
    if region is None:
        st.info("Drag a box on the density (the chart's box tool) or type the four ranges to see the samples "
                "of that region as points.")
        sample_view(view, context="map")
        return
    points = data_density.map_region_points(root, run_id, version, color, *region)
    left, _ = st.columns([3, 1])
    with left:
        if points.total == 0:
            st.info("No sample lies in this region.")
        else:
            figure = charts.data_map_figure(points.frame, color, points.total, points.method,
                                            st.session_state.get(SAMPLE_KEY), cutoffs=cut)
            charts_map.zoom_to(figure, *region, title=formatting.region_title(*region))
            st.plotly_chart(figure, key=CHART_KEY, on_select=on_map_select,
                            selection_mode=("points", "box", "lasso"), config={"scrollZoom": True})
            st.caption(formatting.region_caption(points.shown, points.total, data_density.REGION_MAX_POINTS)
                       + " Click a point to inspect that sample; drag a box or a lasso to select several.")
    selected = map_selection()
    if selected and points.total:
        selection_panel(view, selected, points.is_partial, points.total)
    sample_view(view, context="map")


def selection_panel(view: RunView, selected: tuple[int, ...], partial: bool, total: int) -> None:
    """The selected samples as a table, a CSV of their ids, and a curriculum made from them."""
    root, run_id, version = view.root, view.run_id, view.version
    st.subheader(f"Selection: {len(selected):,} samples")
    if partial:
        st.caption(f"The map draws a random sample of {total:,} samples: the selection holds the drawn points "
                   "inside it, not every sample of the run in that area.")
    rows = data_map.selection_rows(root, run_id, version, selected)
    if view.kind == "classification":
        rows = data_map.with_labels(rows, root, run_id, version, data_map.default_relabel_epochs(root, run_id, version))
    flipped = int(rows["label_noisy"].fillna(False).astype(bool).sum()) if "label_noisy" in rows else 0
    st.caption(f"{flipped:,} of them with a flipped label.")
    shown = [name for name in SELECTION_COLUMNS if name in rows and rows[name].notna().any()]
    st.dataframe(rows[shown], hide_index=True, height=260, width="stretch", key="map_selection_table",
                 column_config={"sample_id": st.column_config.NumberColumn("id", format="%d"),
                                "predicted_label": st.column_config.NumberColumn("predicted", format="%d"),
                                "suggested_label": st.column_config.NumberColumn("suggested", format="%d"),
                                "forgetting_events": st.column_config.NumberColumn("forgetting", format="%d"),
                                "label_noisy": st.column_config.CheckboxColumn("flipped")})
    st.download_button("Download the sample ids (CSV)", data_map.selection_csv(selected),
                       file_name=f"{run_id}-selection.csv", mime="text/csv", key="map_selection_csv")
    cols = st.columns([3, 1, 2, 1])
    action = cols[0].radio("Make a curriculum", list(ACTION_LABELS), format_func=ACTION_LABELS.get,
                           key="map_selection_action", horizontal=True)
    weight = cols[1].number_input("Weight of the selection", 0.0, 0.99, 0.25, 0.05, key="map_selection_weight",
                                  disabled=action != "down-weight")
    name = cols[2].text_input("Name (optional)", key="map_selection_name", placeholder="e.g. drop-hard-corner")
    cols[3].write("")
    if cols[3].button("Save curriculum", key="map_selection_save", type="primary"):
        info = data.run_info(root, run_id, version)
        try:
            path = data_map.save_selection_curriculum(root, run_id, version, info.get("task"), selected, action,
                                                      float(weight), name.strip() or None)
        except data.CurriculumError as error:
            st.error(f"Cannot make this curriculum: {error}")
        else:
            st.success(f"Saved **{formatting.md_text(path.name)}** into the store's curricula/. Launch a rerun with "
                       f"it on the Curriculum page (the link below), or run `trainmap train --curriculum {path}`.")
            st.page_link(widgets.PAGE_CURRICULUM, label="Preview it and launch a rerun on the Curriculum page",
                         icon=":material/tune:", query_params={"start": "saved", "curriculum": path.name})
