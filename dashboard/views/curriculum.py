"""Curriculum page: build a curriculum from scores, preview it, export it, launch a
rerun with it, watch it train, and compare the outcome with the parent.

Never imports torch: builders and counts come through ``dashboard.data`` (from
``store.curriculum`` and ``store.views``), figures from ``dashboard.charts``; reruns are
started by ``dashboard.launcher`` as a separate ``trainmap train`` process.
"""

from __future__ import annotations

import streamlit as st

from dashboard import data, formatting, widgets
from dashboard.views import curriculum_jobs, curriculum_outcome, curriculum_preview


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
    curriculum_preview.show_preview(summary, curriculum)

    st.subheader("Export")
    left, right = st.columns(2)
    left.download_button("Download curriculum (.parquet)", data.curriculum_to_bytes(curriculum, ".parquet"),
                         file_name=f"curriculum-{strategy}-{score or 'none'}.parquet",
                         mime="application/octet-stream", key="cur_download")
    # Actions run as on_click callbacks (before the script reruns), on the curriculum of
    # the run that showed the button: what was previewed is what gets saved or launched.
    parent_config = infos[0].get("config") or {}
    st.session_state["cur_current"] = (curriculum, root, parent_config)
    right.button("Save to the store's curricula/", key="cur_save", on_click=curriculum_jobs.save)
    if st.session_state.get("cur_saved"):
        st.caption(f"saved {st.session_state['cur_saved']}")

    st.subheader("Rerun with this curriculum")
    col1, col2 = st.columns(2)
    epochs = int(col1.number_input("Epochs", min_value=1, value=int(parent_config.get("epochs") or 20), step=1,
                                   key="cur_epochs"))
    keep_steps = col2.checkbox("Keep the parent's steps per epoch (--keep-steps)", key="cur_keep_steps")
    running = st.session_state.get(curriculum_jobs.LAUNCH_KEY)
    busy = running is not None and running.process is not None and running.process.poll() is None
    del epochs, keep_steps  # read by _launch from the widgets' state
    st.button("Launch rerun", key="cur_launch", disabled=busy, type="primary", on_click=curriculum_jobs.launch)
    if st.session_state.get("cur_launch_error"):
        st.error(f"Cannot launch: {st.session_state['cur_launch_error']}")
    curriculum_jobs.show_progress(root)

    reruns = runs[runs["parent_run_id"].notna() & (runs["status"] == "finished")] if not runs.empty else runs
    if not reruns.empty:
        with st.expander("Compare an earlier rerun with its parent"):
            chosen = st.selectbox("Rerun", list(reruns["run_id"]), key="cur_compare",
                                  format_func=lambda r: f"{dict(zip(runs['run_id'], runs['name'])).get(r)} ({r})")
            info = data.run_info(root, chosen, data.run_version(root, chosen))
            loaded = data.recorded_curriculum(root, info)
            if info.get("parent_run_id") in data.run_ids(root):
                curriculum_outcome.show_outcome(root, info["parent_run_id"], chosen, loaded, "cur_earlier")


main()
