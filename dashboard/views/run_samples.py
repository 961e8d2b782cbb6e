"""Run page, samples: the hardest-samples tables and the one-sample view (labels, the class
it was last predicted as and the label the run suggests, scores, input, trajectory)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from dashboard import charts, data, data_map, formatting

SAMPLE_KEY = "sample"
RELABEL_KEY = "relabel_epochs"

TABLES = (
    ("Hardest", None, "by the score you choose (direction from the score registry)"),
    ("Most forgotten", "forgetting_events", "most forgetting events; never-learned first"),
    ("Most likely mislabeled", "aum", "lowest area under the margin (Pleiss et al. 2020)"),
)
#: Columns of the hardest-samples tables that are scores: shown only when the run recorded them.
TABLE_SCORE_COLUMNS = ("loss", "el2n", "forgetting_events", "confidence", "aum", "token_accuracy")
LABEL_COLUMNS = ("label", "original_label", "label_noisy")
PREDICTION_COLUMNS = ("predicted_label", "suggested_label", "suggested_confidence")
#: Short column headers, so narrow columns stay readable.
SHORT_NAMES = {"token_accuracy": "token acc."}
#: The numbers shown for one sample, when the run recorded them.
SAMPLE_METRICS = ("loss", "el2n", "confidence", "variability", "correctness", "aum", "token_accuracy")


@dataclass(frozen=True)
class RunView:
    """What every part of the Run page needs to read one run."""

    root: str
    run_id: str
    version: tuple
    scores: tuple[str, ...]
    kind: str
    #: what "correct" means for this run (formatting.correct_definition)
    definition: str


def choose_sample(sample_id: int | None) -> None:
    if sample_id is not None:
        st.session_state[SAMPLE_KEY] = int(sample_id)


def on_table_select(table_key: str, frame: pd.DataFrame) -> None:
    state = st.session_state.get(table_key)
    rows = state["selection"]["rows"] if state else []
    if rows:
        choose_sample(int(frame.iloc[rows[0]]["sample_id"]))


def relabel_epochs(view: RunView) -> tuple[int, int] | None:
    """The epochs the suggested labels vote over: the user's choice, else the run's default."""
    chosen = st.session_state.get(RELABEL_KEY)
    return tuple(chosen) if chosen else data_map.default_relabel_epochs(view.root, view.run_id, view.version)


def relabel_control(view: RunView, container) -> None:
    """A range slider over the run's recorded epochs for the suggested labels (classification runs)."""
    recorded = data_map.recorded_epochs(view.root, view.run_id, view.version)
    default = data_map.default_relabel_epochs(view.root, view.run_id, view.version)
    if recorded is None or default is None or view.kind != "classification" or recorded[0] == recorded[1]:
        return
    container.slider("Suggest labels from epochs", recorded[0], recorded[1], default, key=RELABEL_KEY,
                     help="The suggested label is the class predicted most often over these epochs; its "
                          "confidence the share of those presentations that predicted it.")


def table_columns(frame: pd.DataFrame, score: str, scores: tuple[str, ...]) -> tuple[list[str], dict]:
    """The columns shown (id, the key score, the labels, the other scores) and their config:
    the key score first after the id so it is never cut off, the rest narrow."""
    hidden = {"original_label", "never_learned"}
    hidden |= {name for name in TABLE_SCORE_COLUMNS if name not in scores and name != score}
    if frame["label"].isna().all():
        hidden |= set(LABEL_COLUMNS) | set(PREDICTION_COLUMNS)  # sequences and per-sample losses
    order = ["sample_id", score, *PREDICTION_COLUMNS, "label", "label_noisy",
             *[name for name in TABLE_SCORE_COLUMNS if name != score]]
    shown = [name for name in dict.fromkeys(order) if name in frame and name not in hidden]
    config = {
        "sample_id": st.column_config.NumberColumn("id", width="small", format="%d"),
        score: st.column_config.NumberColumn(SHORT_NAMES.get(score, score.replace("_", " ")), width="small",
                                             format="%.3f"),
        "predicted_label": st.column_config.NumberColumn("predicted", width="small", format="%d"),
        "suggested_label": st.column_config.NumberColumn("suggested", width="small", format="%d"),
        "suggested_confidence": st.column_config.NumberColumn("sugg. conf.", width="small", format="%.2f"),
        "label": st.column_config.NumberColumn("label", width="small", format="%d"),
        "label_noisy": st.column_config.CheckboxColumn("flipped", width="small"),
    }
    for name in TABLE_SCORE_COLUMNS:
        if name != score:
            config[name] = st.column_config.NumberColumn(
                SHORT_NAMES.get(name, name.replace("_", " ")), width="small", format="%.3f")
    # forgetting events are whole numbers, or "never learned" (readable_forgetting)
    config["forgetting_events"] = st.column_config.TextColumn("forgetting", width="small")
    return shown, config


def readable_forgetting(shown: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """The forgetting column as text: the count, or "never learned" (DESIGN.md: never a count)."""
    if "forgetting_events" not in shown:
        return shown
    never = frame["never_learned"].fillna(False).astype(bool) if "never_learned" in frame else False
    text = ["never learned" if flag else ("" if pd.isna(value) else str(int(value)))
            for flag, value in zip(pd.Series(never, index=frame.index), frame["forgetting_events"])]
    return shown.assign(forgetting_events=text)


def samples_view(view: RunView) -> None:
    controls = st.columns([2, 1, 3])
    rankable = list(view.scores)
    hard_score = controls[0].selectbox("Hardest by", rankable, key="table_score",
                                       index=rankable.index("loss") if "loss" in rankable else 0)
    limit = controls[1].number_input("Rows", 5, 500, 20, 5, key="table_rows")
    relabel_control(view, controls[2])
    epochs = relabel_epochs(view)
    cols = st.columns(3)
    for col, (title, score, note) in zip(cols, TABLES):
        score = score or hard_score
        if score not in view.scores:
            col.caption(f"{title}: {score} not recorded in this run")
            continue
        frame = data.hardest_samples(view.root, view.run_id, view.version, score, int(limit))
        if view.kind == "classification":
            frame = data_map.with_labels(frame, view.root, view.run_id, view.version, epochs)
        col.subheader(title)
        col.caption(note + (f". {view.definition}" if view.kind == "sequence" and score == "forgetting_events"
                            else ""))
        table_key = f"table_{title.replace(' ', '_').lower()}"
        shown, config = table_columns(frame, score, view.scores)
        col.dataframe(
            readable_forgetting(frame[shown], frame), key=table_key, on_select=functools.partial(on_table_select, table_key, frame),
            selection_mode="single-row", hide_index=True, width="stretch", height=380, column_config=config,
        )
    note = unrecorded_note(view.kind)
    labels_note = ""
    if view.kind == "classification" and epochs is not None:
        labels_note = (f" predicted: the class of the last presentation; suggested: the class predicted most "
                       f"often over epochs {epochs[0]}–{epochs[1]}, with that share as its confidence.")
    st.caption("Tick a row to inspect that sample." + labels_note + (f" {note}" if note else ""))
    sample_view(view, context="tables")


def unrecorded_note(kind: str) -> str:
    """Which scores a run of this output kind cannot have, and what to record for them."""
    possible = set(data.scores_of_kind(kind))
    return formatting.unrecorded_scores_note(
        kind, [name for name in data.scores_of_kind("classification") if name not in possible])


def sample_caption(record: dict, kind: str, cutoffs: data_map.RegionCutoffs | None) -> str:
    """Region, learned epoch and forgetting events of one sample, for what the run recorded."""
    parts = []
    region = data_map.sample_region(record.get("confidence"), record.get("variability"), cutoffs)
    if region is not None:
        parts.append(region)
    if not pd.isna(record.get("never_learned")):
        parts.append("never learned" if record["never_learned"]
                     else f"learned at epoch {formatting.number(record.get('first_learned_epoch'))}")
        parts.append(f"{formatting.number(record.get('forgetting_events'))} forgetting events")
    if kind == "sequence" and not pd.isna(record.get("token_count")):
        parts.append(f"{formatting.number(record.get('token_count'), 1)} tokens on average")
    return " · ".join(parts)


def prediction_text(labels: dict, epochs: tuple[int, int] | None) -> str:
    """"predicted **3** at the last presentation · suggested **6** (confidence 0.80, epochs 10–19)"."""
    parts = []
    if not pd.isna(labels.get("predicted_label")):
        parts.append(f"predicted **{int(labels['predicted_label'])}** at its last presentation")
    if not pd.isna(labels.get("suggested_label")) and epochs is not None:
        parts.append(f"suggested label **{int(labels['suggested_label'])}** (confidence "
                     f"{float(labels['suggested_confidence']):.2f} over epochs {epochs[0]}–{epochs[1]})")
    return " · ".join(parts)


def sample_view(view: RunView, context: str) -> None:
    root, run_id, version = view.root, view.run_id, view.version
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
            epochs = relabel_epochs(view)
            predicted = prediction_text(data_map.sample_labels(root, run_id, version, int(sample_id), epochs),
                                        epochs)
            if predicted:
                st.markdown(predicted)
        caption = sample_caption(record, view.kind, data_map.region_cutoffs(root, run_id, version))
        if caption:
            st.caption(caption)
        if view.kind == "sequence" and "forgetting_events" in view.scores:
            st.caption(view.definition)
    shown = [name for name in SAMPLE_METRICS if name in view.scores]
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
