"""Curriculum page: build a curriculum from scores, preview it, export it, launch a
rerun with it, watch it train, and compare the outcome with the parent.

Never imports torch: builders and counts come through ``dashboard.data`` (from
``store.curriculum`` and ``store.views``), figures from ``dashboard.charts``; reruns are
started by ``dashboard.launcher`` as a separate ``trainmap train`` process.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, formatting, launcher, widgets

LAUNCH_KEY = "curriculum_launch"


def _param_widget(strategy: str, name: str, default):
    spec = data.PARAMS[name]
    key = f"cur_{strategy}_{name}"
    if isinstance(spec.kind, tuple):
        return st.selectbox(name, spec.kind, index=spec.kind.index(default) if default in spec.kind else 0,
                            key=key, help=spec.help)
    if spec.kind is int:
        return int(st.number_input(name, value=int(default if default is not None else 1), step=1, key=key,
                                   help=spec.help))
    if spec.kind is dict:  # a table (group_weights): NAME=WEIGHT pairs typed in; files only on the command line
        text = st.text_input(name, value="", key=key, placeholder="docs=2,code=0.5", help=spec.help).strip()
        if text and "=" not in text:
            st.warning(f"{name}: type NAME=WEIGHT pairs separated by commas (e.g. docs=2,code=0.5); "
                       "a table file is read by `trainmap curriculum --group-weights FILE` only")
            return None
        return text or None
    if default is None:  # optional float: off unless ticked
        use = st.checkbox(f"set {name}", value=(name == "fraction"), key=key + "_on", help=spec.help)
        if not use:
            return None
        default = 0.2 if name == "fraction" else 0.0
    return float(st.number_input(name, value=float(default), step=0.05, format="%.4f", key=key, help=spec.help))


def score_options(strategy: str, recorded: list[set[str]]) -> list[str]:
    """The scores every source run recorded (registry order), and the cartography region for
    downweight-noise when all of them recorded confidence and variability."""
    options = [name for name in data.SCORES if all(name in scores for scores in recorded)]
    if strategy == "downweight-noise" and {"confidence", "variability"} <= set(options):
        options.append(data.CARTOGRAPHY)
    return options


def _preview(summary: pd.DataFrame, curriculum: data.Curriculum) -> None:
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


def _outcome(root: str, parent_id: str, rerun_id: str, curriculum: data.Curriculum | None, key: str) -> None:
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


def _progress(root: str) -> None:
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
    info = data.run_info(root, status["run_id"], data.run_version(root, status["run_id"]))
    parent = info.get("parent_run_id")
    curriculum = data.recorded_curriculum(root, info)
    if parent and parent in data.run_ids(root):
        _outcome(root, parent, status["run_id"], curriculum, "cur_live")


def _save() -> None:
    curriculum, root, _ = st.session_state["cur_current"]
    st.session_state["cur_saved"] = str(data.save_curriculum(curriculum, root))


def _launch() -> None:
    """Save the curriculum into the store and start ``trainmap train`` with it."""
    curriculum, root, parent_config = st.session_state["cur_current"]
    st.session_state["cur_launch_error"] = None
    try:
        launcher.check_can_train()  # before anything is saved: a refused launch creates nothing
        path = data.save_curriculum(curriculum, root)
        name = launcher.unique_name()
        args = launcher.rerun_args(parent_config, path, store=root, name=name,
                                   epochs=int(st.session_state.get("cur_epochs") or 1),
                                   keep_steps=bool(st.session_state.get("cur_keep_steps")))
        st.session_state[LAUNCH_KEY] = launcher.launch(args, store=root, name=name)
    except (launcher.LaunchError, data.CurriculumError, OSError) as error:
        st.session_state["cur_launch_error"] = str(error)


def main() -> None:
    root = widgets.open_store()
    st.title("Curriculum")
    st.caption("Build a curriculum from per-sample scores, export it, rerun with it, compare.")
    runs = data.runs_frame(root, data.listing_version(root))
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
    versions = tuple(data.run_version(root, r) for r in sources)
    infos = [data.run_info(root, r, version) for r, version in zip(sources, versions)]
    tasks = {info.get("task") for info in infos}
    if len(tasks) > 1:
        st.warning("The chosen runs belong to different tasks; choose runs of one task.")
        return
    summary = data.sample_summary_with_groups(root, tuple(sources), versions)
    recorded = [set(data.recorded_scores(root, r, version)) for r, version in zip(sources, versions)]
    kinds = sorted({data.output_kind(info) for info in infos})
    col1, col2, col3 = st.columns(3)
    strategy = col1.selectbox("Strategy", list(data.STRATEGIES), key="cur_strategy",
                              format_func=lambda s: f"{s} ({data.STRATEGIES[s].kind})")
    spec = data.STRATEGIES[strategy]
    score = None
    if spec.needs_score:
        options = score_options(strategy, recorded)
        if "loss" in kinds:
            # What a per-sample loss cannot give (GraNd is a schedule, not the output kind).
            unavailable = [name for name in data.scores_of_kind("classification")
                           if name not in data.scores_of_kind("loss")]
            unavailable += [data.CARTOGRAPHY] if strategy == "downweight-noise" else []
            st.caption("Not offered for these runs: " + ", ".join(unavailable) + ". They recorded only a "
                       "per-sample loss, and these scores need p(label), the margin or correctness; "
                       "build from loss (or GraNd), or use random, infobatch or loss-reweight.")
        if not options:
            st.info("These runs share no recorded score; choose a strategy that needs none.")
            return
        score = col2.selectbox("Score", options, index=options.index("loss") if "loss" in options else 0,
                               key="cur_score")
        if "sequence" in kinds and score in data.SCORES and data.SCORES[score].needs == "correct":
            for info in infos:
                st.caption(f"{formatting.md_text(info.get('name'))}: " + formatting.correct_definition(
                    data.output_kind(info), info.get("sequence_correct_threshold")))
    seed = int(col3.number_input("Seed", value=0, step=1, key="cur_seed"))
    st.caption(spec.description)
    params = {}
    param_cols = st.columns(max(1, len(spec.defaults)))
    for column, (name, default) in zip(param_cols, spec.defaults.items()):
        with column:
            params[name] = _param_widget(strategy, name, default)
    try:
        curriculum = data.build_curriculum(summary, strategy, score, seed=seed, task=tasks.pop(),
                                           source_runs=list(sources), **params)
    except data.CurriculumError as error:
        st.warning(f"Cannot build this curriculum: {error}")
        return
    _preview(summary, curriculum)

    st.subheader("Export")
    left, right = st.columns(2)
    left.download_button("Download curriculum (.parquet)", data.curriculum_to_bytes(curriculum, ".parquet"),
                         file_name=f"curriculum-{strategy}-{score or 'none'}.parquet",
                         mime="application/octet-stream", key="cur_download")
    # Actions run as on_click callbacks (before the script reruns), on the curriculum of
    # the run that showed the button: what was previewed is what gets saved or launched.
    parent_config = infos[0].get("config") or {}
    st.session_state["cur_current"] = (curriculum, root, parent_config)
    right.button("Save to the store's curricula/", key="cur_save", on_click=_save)
    if st.session_state.get("cur_saved"):
        st.caption(f"saved {st.session_state['cur_saved']}")

    st.subheader("Rerun with this curriculum")
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
    _progress(root)

    reruns = runs[runs["parent_run_id"].notna() & (runs["status"] == "finished")] if not runs.empty else runs
    if not reruns.empty:
        with st.expander("Compare an earlier rerun with its parent"):
            chosen = st.selectbox("Rerun", list(reruns["run_id"]), key="cur_compare",
                                  format_func=lambda r: f"{dict(zip(runs['run_id'], runs['name'])).get(r)} ({r})")
            info = data.run_info(root, chosen, data.run_version(root, chosen))
            loaded = data.recorded_curriculum(root, info)
            if info.get("parent_run_id") in data.run_ids(root):
                _outcome(root, info["parent_run_id"], chosen, loaded, "cur_earlier")


main()
