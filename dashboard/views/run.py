"""Run page: curves (per step and per layer), the data map, score distributions, hardest
samples, one sample. The data map and the samples live in ``run_map`` and ``run_samples``.

The run, the view (tab) and the sample live in the URL (``?run=…&view=…&sample=…``).
While the run trains, the body is a fragment that re-renders itself every few seconds.
"""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, data_map, formatting, widgets
from dashboard.charts_map import layer_grad_norm_figure
from dashboard.views.run_map import data_map_view
from dashboard.views.run_samples import RunView, samples_view, unrecorded_note

VIEWS = ["Curves", "Data map", "Scores", "Samples"]

root = widgets.open_store()
runs = data.runs_frame(root, data.listing_version(root))
if runs.empty:
    widgets.page_header("Run", root)
    widgets.empty_store_message(root)
    st.stop()

run_id = widgets.pick_run(runs)
first_info = data.run_info(root, run_id, data.run_version(root, run_id))


def header(info: dict, version: tuple) -> None:
    title_cols = st.columns([5, 2])
    title_cols[0].title(formatting.md_text(info.get("name") or run_id))
    status = info.get("status")
    with title_cols[1]:
        st.write("")
        if status == "running":
            st.badge(formatting.status_label(status, info.get("epochs_done"), info.get("max_epochs")),
                     icon=":material/autorenew:", color="green")
            st.caption(f"live · refreshes every {widgets.LIVE_REFRESH_SECONDS:g} s")
        elif status in ("failed", "interrupted"):
            st.badge(str(status), icon=":material/error:", color="red" if status == "failed" else "orange")
        else:
            st.badge(str(status), icon=":material/check:", color="gray")
    config = info.get("config") or {}
    cols = st.columns(7)
    cols[0].metric("Task", str(info.get("task")))
    cols[1].metric("Model", str(info.get("model")))
    cols[2].metric("Seed", formatting.number(info.get("seed")))
    cols[3].metric("Label noise", formatting.percent(config.get("label_noise", 0.0), 0))
    cols[4].metric("Epochs", f"{info.get('epochs_done', 0)}/{info.get('max_epochs') or '?'}")
    cols[5].metric("Best val accuracy", formatting.percent(info.get("best_val_accuracy")))
    cols[6].metric("Samples", f"{data.overview(root, run_id, version)['samples']:,}")
    lineage = []
    if info.get("parent_run_id"):
        lineage.append(f"parent run {formatting.md_text(info['parent_run_id'])}")
    if info.get("curriculum"):
        lineage.append(f"curriculum {formatting.md_text(info['curriculum'])}")
    kind = data.output_kind(info)
    if kind != "classification":
        lineage.insert(0, formatting.kind_label(kind))
    st.caption(f"run id {formatting.md_text(run_id)} · created {formatting.md_text(info.get('created_at'))}"
               + (" · " + " · ".join(lineage) if lineage else ""))
    if info.get("parent_run_id"):
        st.page_link(widgets.PAGE_COMPARE, label="Compare with its parent run",
                     icon=":material/compare_arrows:",
                     query_params={"runs": [info["parent_run_id"], run_id]})


def curves_view(version: tuple, kind: str) -> None:
    epochs = data.epoch_metrics(root, run_id, version)
    if epochs.empty:
        st.info("No epoch has finished yet: the curves appear after the first one.")
    else:
        cols = st.columns(2)
        cols[0].plotly_chart(charts.epoch_figure(epochs, "loss"), key="curve_loss")
        accuracy = [column for column in ("train_accuracy", "val_accuracy") if column in epochs]
        if kind == "loss" and not any(epochs[column].notna().any() for column in accuracy):
            cols[1].info("No accuracy for this run: it recorded only a per-sample loss, which has no "
                         "correct prediction to count.")
        else:
            cols[1].plotly_chart(charts.epoch_figure(epochs, "accuracy"), key="curve_accuracy")
    steps = data.step_curves(root, run_id, version)
    if steps.total == 0:
        st.caption("No optimisation steps recorded.")
        return
    note = charts.sampling_note(steps.shown, steps.total, "steps", "means over equal step buckets")
    cols = st.columns(3)
    cols[0].plotly_chart(charts.step_figure(steps.frame, "loss", "Loss per step", note), key="step_loss")
    cols[1].plotly_chart(charts.step_figure(steps.frame, "grad_norm", "Gradient norm", note, log_y=True),
                         key="step_grad_norm")
    cols[2].plotly_chart(charts.step_figure(steps.frame, "lr", "Learning rate", note), key="step_lr")
    layers = data_map.layer_grad_norms(root, run_id, version)
    if layers.total:
        layer_note = charts.sampling_note(layers.shown // max(layers.frame["layer"].nunique(), 1), layers.total,
                                          "steps", "means over equal step buckets")
        st.plotly_chart(layer_grad_norm_figure(layers.frame, layer_note), key="step_layer_grad_norms")
        st.caption("The gradient norm of each layer's parameters, recorded with the total gradient norm.")


def scores_view(version: tuple, scores: tuple[str, ...], kind: str, definition: str) -> None:
    st.caption("Distribution of every per-sample score over the training set (binned in "
               "DuckDB; red: samples whose label was flipped).")
    note = unrecorded_note(kind)
    if note:
        st.caption(note)
    shown = [name for name in scores if name != "forgetting_events"]
    histograms = data.score_histograms(root, run_id, version, tuple(shown))
    for start in range(0, len(shown), 3):
        cols = st.columns(3)
        for col, score in zip(cols, shown[start:start + 3]):
            histogram = histograms[score]
            if histogram.bins.empty:
                col.caption(f"{score}: no values recorded")
                continue
            col.plotly_chart(charts.histogram_figure(histogram.bins, score, histogram.missing),
                             key=f"hist_{score}")
            col.caption(data.SCORES[score].description
                        + (f" — {data.SCORES[score].citation}" if data.SCORES[score].citation else ""))
    if "forgetting_events" in scores:
        counts = data.forgetting_counts(root, run_id, version)
        st.plotly_chart(charts.forgetting_figure(counts), key="forgetting_chart")
        st.caption("Toneva et al. 2019: a forgetting event is a correct prediction followed by "
                   "a wrong one. Never-learned samples are counted apart, not as a number of events."
                   + (" " + definition if kind == "sequence" else ""))


def groups_section(version: tuple, scores: list[str]) -> None:
    """Per-group loss curves over steps and epochs, and each group's spread of a per-sample
    score; nothing for a run whose batches gave no groups."""
    from dashboard import charts_groups

    groups = data.run_groups(root, run_id, version)
    if not groups:
        return
    st.subheader("Groups")
    st.caption(f"{len(groups)} groups, as the training batches gave them (a `group` per sample). Curves: the "
               "mean loss of each group's presentations; spreads: per sample, in the group of its latest "
               "presentation.")
    curves = data.group_loss_curves(root, run_id, version)
    cols = st.columns(2)
    cols[0].plotly_chart(charts_groups.group_loss_figure(curves.frame, curves.total, groups), key="group_loss")
    epochs = data.group_epoch_curves(root, run_id, version)
    if not epochs.empty:
        cols[1].plotly_chart(charts_groups.group_epoch_figure(epochs, "loss", groups), key="group_epoch_loss")
    if not scores:
        return
    default = next((name for name in ("loss", "el2n") if name in scores), scores[0])
    score = st.selectbox("Spread per group of", scores, index=scores.index(default), key="group_score",
                         format_func=lambda name: name.replace("_", " "))
    boxes = data.group_score_boxes(root, run_id, version, score)
    if boxes.empty:
        st.caption(f"No group has a value of {score} yet.")
    else:
        st.plotly_chart(charts_groups.group_box_figure(boxes, score, groups), key="group_box")


@st.fragment(run_every=widgets.live_interval(first_info.get("status")))
def run_body() -> None:
    # Inside the fragment: Streamlit shows a fragment's exception itself, before any handler
    # around the page could turn it into one line (a damaged segment, a run.json gone bad).
    with widgets.friendly_errors("the Run page"):
        run_content()


def run_content() -> None:
    version = data.run_version(root, run_id)
    info = data.run_info(root, run_id, version)
    if info.get("status") != first_info.get("status"):
        st.rerun()  # the run ended: re-render once without the timer
    header(info, version)
    if info.get("status") in ("failed", "interrupted"):
        st.warning(f"This run {info.get('status')}: {formatting.md_text(info.get('error') or 'no error recorded')}. "
                   "Everything it recorded before that is shown below.")
    epochs = data.epoch_metrics(root, run_id, version)
    if epochs.empty and not data.presentations_recorded(root, run_id):
        if info.get("status") == "running":
            st.info("This run has not completed an epoch yet. Curves, the data map and scores "
                    "appear after its first epoch; this page refreshes by itself.")
        else:
            st.info("This run has no completed epoch: nothing was recorded to show.")
        return
    scores = data.recorded_scores(root, run_id, version)
    kind = data.output_kind(info)
    # What "correct" means here: the basis of forgetting, first-learned epoch and correctness.
    definition = formatting.correct_definition(kind, info.get("sequence_correct_threshold"))
    view_of_run = RunView(root, run_id, version, tuple(scores), kind, definition)
    tabs = st.tabs(VIEWS, key="view", bind="query-params")
    for tab, view in zip(tabs, VIEWS):
        if not tab.open:
            continue
        with tab, widgets.friendly_errors(f"the {view.lower()} view"):
            if view == "Curves":
                curves_view(version, kind)
                groups_section(version, scores)
            elif view == "Data map":
                data_map_view(view_of_run)
            elif view == "Scores":
                scores_view(version, scores, kind, definition)
            else:
                samples_view(view_of_run)


run_body()
