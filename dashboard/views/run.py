"""Run page: curves, the data map, score distributions, hardest samples, one sample.

The run, the view (tab) and the sample live in the URL (``?run=…&view=…&sample=…``).
While the run trains, the body is a fragment that re-renders itself every few seconds.
"""

from __future__ import annotations

import functools

import pandas as pd
import streamlit as st

from dashboard import charts, data, formatting, widgets

VIEWS = ["Curves", "Data map", "Scores", "Samples"]
SAMPLE_KEY = "sample"

root = widgets.open_store()
runs = data.runs_frame(root, data.listing_version(root))
if runs.empty:
    widgets.page_header("Run", root)
    widgets.empty_store_message(root)
    st.stop()

run_id = widgets.pick_run(runs)
first_info = data.run_info(root, run_id, data.run_version(root, run_id))


def choose_sample(sample_id: int | None) -> None:
    if sample_id is not None:
        st.session_state[SAMPLE_KEY] = int(sample_id)


def on_map_select() -> None:
    choose_sample(widgets.first_custom_id(widgets.selected_points("data_map_chart")))


def on_table_select(table_key: str, frame: pd.DataFrame) -> None:
    state = st.session_state.get(table_key)
    rows = state["selection"]["rows"] if state else []
    if rows:
        choose_sample(int(frame.iloc[rows[0]]["sample_id"]))


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


def data_map_view(version: tuple, scores: list[str], kind: str, definition: str) -> None:
    if "confidence" not in scores:
        # Nothing to plot: no p(label) recorded (a per-sample-loss run) or no sample presented yet.
        st.info(formatting.data_map_unavailable(kind))
        sample_view(version, scores, kind, definition, context="map")
        return
    controls = st.columns([2, 2, 2])
    color_options = [name for name in ("correctness", *scores) if name in scores]
    color_options = list(dict.fromkeys(color_options))
    color = controls[0].selectbox("Colour by", color_options, key="map_color",
                                  format_func=lambda name: name.replace("_", " "))
    ambiguous = controls[1].slider("Ambiguous if variability ≥", 0.0, 0.5,
                                   data.DEFAULT_AMBIGUOUS_VARIABILITY, 0.01, key="map_ambiguous")
    easy = controls[2].slider("Easy if confidence ≥ (else hard)", 0.0, 1.0,
                              data.DEFAULT_EASY_CONFIDENCE, 0.05, key="map_easy")
    points = data.data_map(root, run_id, version, color)
    left, right = st.columns([3, 1])
    with left:
        if points.total == 0:
            st.info("No sample has been presented yet.")
        else:
            figure = charts.data_map_figure(points.frame, color, points.total, points.method,
                                            st.session_state.get(SAMPLE_KEY))
            st.plotly_chart(figure, key="data_map_chart", on_select=on_map_select,
                            selection_mode="points", config={"scrollZoom": True})
            st.caption("Click a point to inspect that sample. Crosses mark flipped labels."
                       + (f" Showing a random {points.shown:,} of {points.total:,} samples, "
                          "sampled in DuckDB." if points.is_partial else ""))
            if kind == "sequence":
                st.caption("Confidence is each sequence's mean p(target token) over epochs. " + definition)
    with right:
        counts = data.region_counts(root, run_id, version, ambiguous, easy)
        st.subheader("Regions")
        for row in counts.itertuples():
            st.metric(row.region, f"{row.samples:,}",
                      help=f"{row.flipped:,} of them with a flipped label")
        st.caption("Swayamdipta et al. 2020: easy-to-learn (confident, stable), ambiguous "
                   "(variable), hard-to-learn (unconfident, stable; often mislabeled).")
    sample_view(version, scores, kind, definition, context="map")


def unrecorded_note(kind: str) -> str:
    """Which scores a run of this output kind cannot have, and what to record for them."""
    possible = set(data.scores_of_kind(kind))
    return formatting.unrecorded_scores_note(
        kind, [name for name in data.scores_of_kind("classification") if name not in possible])


def scores_view(version: tuple, scores: list[str], kind: str, definition: str) -> None:
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


TABLES = (
    ("Hardest", None, "by the score you choose (direction from the score registry)"),
    ("Most forgotten", "forgetting_events", "most forgetting events; never-learned first"),
    ("Most likely mislabeled", "aum", "lowest area under the margin (Pleiss et al. 2020)"),
)


#: Columns of the hardest-samples tables that are scores: shown only when the run recorded them.
TABLE_SCORE_COLUMNS = frozenset({"loss", "el2n", "forgetting_events", "confidence", "aum", "token_accuracy"})
LABEL_COLUMNS = ("label", "original_label", "label_noisy")
#: The numbers shown for one sample, when the run recorded them.
SAMPLE_METRICS = ("loss", "el2n", "confidence", "variability", "correctness", "aum", "token_accuracy")


def samples_view(version: tuple, scores: list[str], kind: str, definition: str) -> None:
    controls = st.columns([2, 1, 3])
    rankable = [name for name in scores]
    hard_score = controls[0].selectbox("Hardest by", rankable, key="table_score",
                                       index=rankable.index("loss") if "loss" in rankable else 0)
    limit = controls[1].number_input("Rows", 5, 500, 20, 5, key="table_rows")
    cols = st.columns(3)
    for col, (title, score, note) in zip(cols, TABLES):
        score = score or hard_score
        if score not in scores:
            col.caption(f"{title}: {score} not recorded in this run")
            continue
        frame = data.hardest_samples(root, run_id, version, score, int(limit))
        col.subheader(title)
        col.caption(note + (f". {definition}" if kind == "sequence" and score == "forgetting_events" else ""))
        table_key = f"table_{title.replace(' ', '_').lower()}"
        hidden = {"original_label", "never_learned"}
        hidden |= {name for name in TABLE_SCORE_COLUMNS if name not in scores and name != score}
        if frame["label"].isna().all():
            hidden |= set(LABEL_COLUMNS)  # sequences and per-sample losses have no class label
        col.dataframe(
            frame[[c for c in frame.columns if c not in hidden]],
            key=table_key, on_select=functools.partial(on_table_select, table_key, frame),
            selection_mode="single-row", hide_index=True, width="stretch", height=380,
            column_config={"label_noisy": st.column_config.CheckboxColumn("flipped")},
        )
    note = unrecorded_note(kind)
    st.caption("Tick a row to inspect that sample." + (f" {note}" if note else ""))
    sample_view(version, scores, kind, definition, context="tables")


def sample_caption(record: dict, kind: str) -> str:
    """Region, learned epoch and forgetting events of one sample, for what the run recorded."""
    parts = []
    region = data.sample_region(record.get("confidence"), record.get("variability"))
    if region is not None:
        parts.append(region)
    if not pd.isna(record.get("never_learned")):
        parts.append("never learned" if record["never_learned"]
                     else f"learned at epoch {formatting.number(record.get('first_learned_epoch'))}")
        parts.append(f"{formatting.number(record.get('forgetting_events'))} forgetting events")
    if kind == "sequence" and not pd.isna(record.get("token_count")):
        parts.append(f"{formatting.number(record.get('token_count'), 1)} tokens on average")
    return " · ".join(parts)


def sample_view(version: tuple, scores: list[str], kind: str, definition: str, context: str) -> None:
    st.divider()
    id_range = data.sample_id_range(root, run_id, version)
    if id_range is None:
        st.info("This run has no samples yet.")
        return
    cols = st.columns([1, 3])
    sample_id = cols[0].number_input(
        "Sample id", min_value=id_range[0], max_value=id_range[1], value=None, step=1,
        key=SAMPLE_KEY, bind="query-params", placeholder="type an id",
    )
    if sample_id is None:
        cols[1].info("Pick a sample: click a point in the data map, tick a row in a table, "
                     "or type its id.")
        return
    record = data.sample_record(root, run_id, version, int(sample_id))
    if record is None:
        cols[1].warning(f"Sample {sample_id} is not in this run.")
        return
    info = data.run_info(root, run_id, version)
    has_label = not pd.isna(record.get("label"))
    with cols[1]:
        st.subheader(f"Sample {int(sample_id)}")
        if has_label:
            given, original = int(record["label"]), int(record["original_label"])
            label_text = f"given label **{given}**, original label **{original}**"
            if bool(record.get("label_noisy")):
                st.markdown(f":red-badge[flipped label] {label_text}")
            else:
                st.markdown(label_text)
        caption = sample_caption(record, kind)
        if caption:
            st.caption(caption)
        if kind == "sequence" and "forgetting_events" in scores:
            st.caption(definition)
    shown = [name for name in SAMPLE_METRICS if name in scores]
    metric_cols = st.columns(max(len(shown), 1))
    for col, name in zip(metric_cols, shown):
        col.metric(name.replace("_", " "), formatting.number(record.get(name)))
    task = str(info.get("task"))
    dataset_version = data.dataset_version(root, task)
    left, right = st.columns([1, 2])
    with left:
        if dataset_version is not None:
            x = data.sample_input(root, task, dataset_version, int(sample_id))
            encoding = data.dataset_text_encoding(root, task, dataset_version)
            if x is None:
                st.caption("This sample's input is not in the store's dataset file.")
            elif encoding is not None:
                text_sample(x, encoding)
            else:
                title = f"Input (label {int(record['label'])})" if has_label else "Input"
                st.plotly_chart(charts.input_figure(x, title), key=f"input_{context}")
        else:
            path = data.dataset_path(root, task)
            st.caption(f"No inputs stored for task {formatting.md_text(repr(info.get('task')))} "
                       + (f"(expected {path})." if path is not None else "(its name is not a dataset name)."))
    with right:
        trajectory = data.trajectory(root, run_id, version, int(sample_id))
        if trajectory.empty:
            st.caption("Not presented yet.")
        else:
            st.plotly_chart(charts.trajectory_figure(trajectory, "Over training"),
                            key=f"trajectory_{context}")


def text_sample(x, encoding: str) -> None:
    """A sample whose stored input is the bytes of a text, shown as that text."""
    st.markdown(f"**Text** · {len(x):,} bytes")
    st.code(formatting.decoded_text(x, encoding), language=None, wrap_lines=True)


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
    tabs = st.tabs(VIEWS, key="view", bind="query-params")
    for tab, view in zip(tabs, VIEWS):
        if not tab.open:
            continue
        with tab, widgets.friendly_errors(f"the {view.lower()} view"):
            if view == "Curves":
                curves_view(version, kind)
                groups_section(version, scores)
            elif view == "Data map":
                data_map_view(version, scores, kind, definition)
            elif view == "Scores":
                scores_view(version, scores, kind, definition)
            else:
                samples_view(version, scores, kind, definition)


run_body()
