"""Curriculum page: build a curriculum from scores, preview it, export it, launch a
rerun with it, watch it train, and compare the outcome with the parent.

Never imports torch: builders come from ``store.curriculum``, reruns are started by
``dashboard.launcher`` as a separate ``trainmap train`` process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import store as store_api
from dashboard import charts, common, launcher
from store import Store
from store.curriculum import (
    CARTOGRAPHY,
    PARAMS,
    STRATEGIES,
    Curriculum,
    CurriculumError,
    build_curriculum,
    class_accuracy,
    curriculum_to_bytes,
    fate_table,
    load_curriculum,
    sample_fate,
    save_to_store,
)
from store.scores import REGIONS, SCORES, cartography_region

LAUNCH_KEY = "curriculum_launch"


@st.cache_data(show_spinner=False, max_entries=16)
def _summary(root: str, run_ids: tuple[str, ...], versions: tuple) -> pd.DataFrame:
    del versions
    return store_api.sample_summary(Store(root), list(run_ids))


@st.cache_data(show_spinner=False, max_entries=32)
def _class_accuracy(root: str, run_id: str, version: tuple) -> pd.DataFrame:
    del version
    return class_accuracy(Store(root), run_id)


def _param_widget(strategy: str, name: str, default):
    spec = PARAMS[name]
    key = f"cur_{strategy}_{name}"
    if isinstance(spec.kind, tuple):
        return st.selectbox(name, spec.kind, index=spec.kind.index(default) if default in spec.kind else 0,
                            key=key, help=spec.help)
    if spec.kind is int:
        return int(st.number_input(name, value=int(default if default is not None else 1), step=1, key=key,
                                   help=spec.help))
    if default is None:  # optional float: off unless ticked
        use = st.checkbox(f"set {name}", value=(name == "fraction"), key=key + "_on", help=spec.help)
        if not use:
            return None
        default = 0.2 if name == "fraction" else 0.0
    return float(st.number_input(name, value=float(default), step=0.05, format="%.4f", key=key, help=spec.help))


def _data_map(summary: pd.DataFrame, weight: np.ndarray) -> go.Figure:
    figure = go.Figure()
    group = np.where(weight == 0, "pruned", np.where(weight < 1, "down-weighted", "kept"))
    styles = {"kept": ("#9bbcd8", "circle", 4), "down-weighted": ("#f2a541", "diamond", 6), "pruned": ("#d62728", "x", 6)}
    for name, (colour, symbol, size) in styles.items():
        part = summary[group == name]
        if part.empty:
            continue
        if len(part) > common.MAX_SCATTER_POINTS:
            part = part.sample(common.MAX_SCATTER_POINTS, random_state=0)
        figure.add_trace(go.Scattergl(
            x=part["variability"], y=part["confidence"], mode="markers", name=f"{name} ({int((group == name).sum())})",
            marker=dict(color=colour, symbol=symbol, size=size, opacity=0.8),
            customdata=np.stack([part["sample_id"], part["label_noisy"].astype(int)], axis=-1),
            hovertemplate="sample %{customdata[0]}<br>flipped %{customdata[1]}<extra>" + name + "</extra>",
        ))
    figure.update_layout(title="Data map: what the curriculum drops", height=420,
                         legend=dict(orientation="h", y=-0.15), margin=dict(l=40, r=10, t=40, b=40))
    figure.update_xaxes(title_text="variability")
    figure.update_yaxes(title_text="confidence", range=[-0.02, 1.02])
    return figure


def _preview(summary: pd.DataFrame, curriculum: Curriculum) -> None:
    weight = curriculum.weights_for(summary["sample_id"].to_numpy())
    noisy = summary["label_noisy"].fillna(False).to_numpy(bool)
    facts = curriculum.summary()
    cols = st.columns(5)
    cols[0].metric("Samples", f"{facts['samples']:,}")
    cols[1].metric("Kept", f"{facts['kept']:,}")
    cols[2].metric("Pruned", f"{facts['pruned']:,}")
    cols[3].metric("Flipped labels pruned", f"{int((weight[noisy] == 0).sum())} / {int(noisy.sum())}")
    cols[4].metric("Flipped labels down-weighted", f"{int(((weight[noisy] > 0) & (weight[noisy] < 1)).sum())}")
    if curriculum.online:
        st.info(f"Online rule **{curriculum.online['rule']}** {curriculum.online['params']}: applied while the "
                "rerun trains; the file's weights are all 1.")
    if "start_epoch" in curriculum.table:
        starts = curriculum.table["start_epoch"].value_counts().sort_index()
        st.caption("Samples becoming available per epoch: " + ", ".join(f"epoch {e}: {n}" for e, n in starts.items()))
    region = cartography_region(summary["confidence"], summary["variability"])
    left, right = st.columns(2)
    per_class = pd.DataFrame({"label": summary["label"], "kept": weight > 0, "weight": weight})
    by_class = per_class.groupby("label").agg(samples=("kept", "size"), kept=("kept", "sum"), mean_weight=("weight", "mean"))
    left.markdown("**Kept per class**")
    left.dataframe(by_class.reset_index(), hide_index=True)
    by_region = pd.DataFrame({"region": region, "kept": weight > 0, "flipped": noisy}).groupby("region").agg(
        samples=("kept", "size"), kept=("kept", "sum"), flipped=("flipped", "sum")).reindex(list(REGIONS)).fillna(0)
    right.markdown("**Kept per cartography region**")
    right.dataframe(by_region.reset_index(), hide_index=True)
    left, right = st.columns(2)
    histogram = go.Figure(go.Histogram(x=weight, nbinsx=40, marker_color="#4c78a8"))
    histogram.update_layout(title="Weights (0 = pruned)", height=420, margin=dict(l=40, r=10, t=40, b=40))
    histogram.update_xaxes(title_text="weight")
    left.plotly_chart(histogram, key="cur_weight_hist")
    right.plotly_chart(_data_map(summary, weight), key="cur_data_map")


def _outcome(store: Store, parent_id: str, rerun_id: str, curriculum: Curriculum | None, key: str) -> None:
    root = str(store.root)
    st.subheader("Outcome: rerun vs parent")
    labels = {parent_id: f"parent · {store.run_info(parent_id).get('name')}",
              rerun_id: f"rerun · {store.run_info(rerun_id).get('name')}"}
    curves = []
    finals = []
    for run_id in (parent_id, rerun_id):
        version = common.run_version(store, run_id)
        metrics = common.epoch_metrics(root, run_id, version).assign(run_id=run_id)
        curves.append(metrics)
        info = store.run_info(run_id)
        finals.append({"run": labels[run_id], "best val acc": info.get("best_val_accuracy"),
                       "final val acc": info.get("final_val_accuracy"), "final val loss": info.get("final_val_loss"),
                       "epochs": info.get("epochs_done")})
    st.dataframe(pd.DataFrame(finals), hide_index=True)
    curves = pd.concat(curves, ignore_index=True)
    left, right = st.columns(2)
    left.plotly_chart(charts.compare_epochs_figure(curves, "val_accuracy", labels), key=f"{key}_acc")
    right.plotly_chart(charts.compare_epochs_figure(curves, "val_loss", labels), key=f"{key}_loss")
    per_class = []
    for run_id in (parent_id, rerun_id):
        accuracy = _class_accuracy(root, run_id, common.run_version(store, run_id))
        if not accuracy.empty:
            last = accuracy[accuracy["epoch"] == accuracy["epoch"].max()]
            per_class.append(last.set_index("label")["accuracy"].rename(labels[run_id]))
    if per_class:
        st.markdown("**Validation accuracy per class (last epoch)**")
        table = pd.concat(per_class, axis=1).reset_index()
        st.dataframe(table, hide_index=True)
    else:
        st.caption("No per-class validation accuracy recorded for these runs.")
    if curriculum is not None:
        parent = _summary(root, (parent_id,), (common.run_version(store, parent_id),))
        rerun = _summary(root, (rerun_id,), (common.run_version(store, rerun_id),))
        fate = fate_table(sample_fate(parent, rerun, curriculum))
        st.markdown("**What happened to the pruned and down-weighted samples** (mean confidence = p_true, and "
                    "correctness, parent vs rerun; pruned samples are never presented in the rerun)")
        st.dataframe(fate, hide_index=True)


@st.fragment(run_every=2)
def _live_progress(launch: launcher.Launch) -> None:
    """Re-rendered every 2 s while the rerun trains; when it ends, the whole page reruns
    once (the Launch button comes back, the outcome renders without a timer)."""
    status = launcher.launch_status(launch)
    if status["state"] not in ("starting", "running"):
        st.rerun()
    done, total = status["epochs_done"] or 0, status["max_epochs"]
    fraction = (done / total) if total else 0.0
    st.progress(min(fraction, 1.0), text=f"rerun {launch.name}: {status['state']} · epoch {done}/{total or '?'}")


def _progress(store: Store) -> None:
    launch: launcher.Launch | None = st.session_state.get(LAUNCH_KEY)
    if launch is None:
        return
    status = launcher.launch_status(launch)
    done = status["epochs_done"] or 0
    if status["state"] in ("starting", "running"):
        _live_progress(launch)
        return
    if status["state"] == "failed":
        st.error(f"rerun {launch.name} failed (exit {status['returncode']}): " + " | ".join(status.get("log_tail", [])))
        return
    st.success(f"rerun {launch.name} finished: run {status['run_id']}, {done} epoch{'' if done == 1 else 's'}")
    info = store.run_info(status["run_id"])
    parent = info.get("parent_run_id")
    curriculum = None
    path = _curriculum_path(store, (info.get("config") or {}).get("curriculum"))
    if path is not None:
        try:
            curriculum = load_curriculum(path)
        except CurriculumError:
            pass
    if parent and parent in store.run_ids():
        _outcome(store, parent, status["run_id"], curriculum, "cur_live")


def _curriculum_path(store: Store, recorded: str | None) -> Path | None:
    """The curriculum file a run recorded, or its copy in this store's curricula/ (a store
    copied or moved elsewhere keeps its curricula, not their old absolute paths)."""
    if not recorded:
        return None
    for candidate in (Path(recorded), store.root / "curricula" / Path(recorded).name):
        if candidate.is_file():
            return candidate
    return None


def _save() -> None:
    curriculum, root, _ = st.session_state["cur_current"]
    st.session_state["cur_saved"] = str(save_to_store(curriculum, root))


def _launch() -> None:
    """Save the curriculum into the store and start ``trainmap train`` with it."""
    curriculum, root, parent_config = st.session_state["cur_current"]
    st.session_state["cur_launch_error"] = None
    try:
        path = save_to_store(curriculum, root)
        name = launcher.unique_name()
        args = launcher.rerun_args(parent_config, path, store=root, name=name,
                                   epochs=int(st.session_state.get("cur_epochs") or 1),
                                   keep_steps=bool(st.session_state.get("cur_keep_steps")))
        st.session_state[LAUNCH_KEY] = launcher.launch(args, store=root, name=name)
    except (launcher.LaunchError, CurriculumError, OSError) as error:
        st.session_state["cur_launch_error"] = str(error)


def main() -> None:
    store = common.open_store()
    root = str(store.root)
    st.title("Curriculum")
    st.caption("Build a curriculum from per-sample scores, export it, rerun with it, compare.")
    runs = common.runs_frame(root, common.listing_version(root))
    finished = runs[runs["status"] == "finished"] if not runs.empty else runs
    if finished.empty:
        st.info("No finished runs yet. Train one with `trainmap train --task mnist1d --model cnn`.")
        return
    run_ids = list(finished.sort_values("created_at", ascending=False, kind="stable")["run_id"])
    names = dict(zip(finished["run_id"], finished["name"]))
    sources = st.multiselect("Source run(s): scores averaged over several (seeds)", run_ids, default=run_ids[:1],
                             format_func=lambda r: f"{names.get(r)} ({r})", key="cur_sources")
    if not sources:
        st.info("Choose at least one source run.")
        return
    tasks = {store.run_info(r).get("task") for r in sources}
    if len(tasks) > 1:
        st.warning("The chosen runs belong to different tasks; choose runs of one task.")
        return
    versions = tuple(common.run_version(store, r) for r in sources)
    summary = _summary(root, tuple(sources), versions)
    col1, col2, col3 = st.columns(3)
    strategy = col1.selectbox("Strategy", list(STRATEGIES), key="cur_strategy",
                              format_func=lambda s: f"{s} ({STRATEGIES[s].kind})")
    spec = STRATEGIES[strategy]
    score = None
    if spec.needs_score:
        options = list(SCORES) + ([CARTOGRAPHY] if strategy == "downweight-noise" else [])
        score = col2.selectbox("Score", options, index=options.index("loss"), key="cur_score")
    seed = int(col3.number_input("Seed", value=0, step=1, key="cur_seed"))
    st.caption(spec.description)
    params = {}
    param_cols = st.columns(max(1, len(spec.defaults)))
    for column, (name, default) in zip(param_cols, spec.defaults.items()):
        with column:
            params[name] = _param_widget(strategy, name, default)
    try:
        curriculum = build_curriculum(summary, strategy, score, seed=seed, task=tasks.pop(),
                                      source_runs=list(sources), **params)
    except CurriculumError as error:
        st.warning(f"Cannot build this curriculum: {error}")
        return
    _preview(summary, curriculum)

    st.subheader("Export")
    left, right = st.columns(2)
    left.download_button("Download curriculum (.parquet)", curriculum_to_bytes(curriculum, ".parquet"),
                         file_name=f"curriculum-{strategy}-{score or 'none'}.parquet",
                         mime="application/octet-stream", key="cur_download")
    # Actions run as on_click callbacks (before the script reruns), on the curriculum of
    # the run that showed the button: what was previewed is what gets saved or launched.
    st.session_state["cur_current"] = (curriculum, root, store.run_info(sources[0]).get("config") or {})
    right.button("Save to the store's curricula/", key="cur_save", on_click=_save)
    if st.session_state.get("cur_saved"):
        st.caption(f"saved {st.session_state['cur_saved']}")

    st.subheader("Rerun with this curriculum")
    parent_config = store.run_info(sources[0]).get("config") or {}
    col1, col2 = st.columns(2)
    epochs = int(col1.number_input("Epochs", min_value=1, value=int(parent_config.get("epochs") or 20), step=1,
                                   key="cur_epochs"))
    keep_steps = col2.checkbox("Keep the parent's steps per epoch (--keep-steps)", key="cur_keep_steps")
    running = st.session_state.get(LAUNCH_KEY)
    busy = running is not None and running.process is not None and running.process.poll() is None
    del epochs, keep_steps  # read by _launch from the widgets' state
    st.button("Launch rerun", key="cur_launch", disabled=busy, type="primary", on_click=_launch)
    if st.session_state.get("cur_launch_error"):
        st.error(f"Cannot launch: {st.session_state['cur_launch_error']}")
    _progress(store)

    reruns = runs[runs["parent_run_id"].notna() & (runs["status"] == "finished")] if not runs.empty else runs
    if not reruns.empty:
        with st.expander("Compare an earlier rerun with its parent"):
            chosen = st.selectbox("Rerun", list(reruns["run_id"]), key="cur_compare",
                                  format_func=lambda r: f"{dict(zip(runs['run_id'], runs['name'])).get(r)} ({r})")
            info = store.run_info(chosen)
            curriculum_file = _curriculum_path(store, (info.get("config") or {}).get("curriculum"))
            loaded = None
            if curriculum_file is not None:
                try:
                    loaded = load_curriculum(curriculum_file)
                except CurriculumError:
                    loaded = None
            if info.get("parent_run_id") in store.run_ids():
                _outcome(store, info["parent_run_id"], chosen, loaded, "cur_earlier")


main()
