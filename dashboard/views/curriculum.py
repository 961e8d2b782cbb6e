"""Curriculum page: build a curriculum from scores, preview it, export it, launch a
rerun with it, watch it train, and compare the outcome with the parent.

Never imports torch: builders and counts come through ``dashboard.data`` (from
``store.curriculum`` and ``store.views``), figures from ``dashboard.charts``; reruns are
started by ``dashboard.launcher`` as a separate ``trainmap train`` process.
"""

from __future__ import annotations

import streamlit as st

from dashboard import data, data_curriculum, formatting, widgets
from dashboard.views import curriculum_jobs, curriculum_outcome, curriculum_preview, curriculum_saved


def _param_widget(strategy: str, name: str, default):
    spec = data.PARAMS[name]
    key = f"cur_{strategy}_{name}"
    if name == "class_floor":  # off unless ticked; a floor of half the share when ticked
        use = st.checkbox("per-class floor", value=False, key=key + "_on", help=spec.help)
        if not use:
            return None
        return float(st.number_input(name, min_value=0.0, max_value=1.0, value=0.5, step=0.05, key=key,
                                     help=spec.help))
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


#: the two starts of the page: a curriculum built from scores here, or a saved file
STARTS = {"scores": "build from a run's scores", "saved": "a saved curriculum (data map selection, file)"}


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
    # A link naming a saved file (the data map's "Save curriculum") opens on it.
    default_start = "saved" if st.query_params.get(curriculum_saved.FILE_KEY) else "scores"
    widgets.url_synced_choice("start", list(STARTS), default_start)
    start = st.radio("Start from", list(STARTS), key="start", horizontal=True, format_func=STARTS.get)
    widgets.write_url("start", start)
    if start == "saved":
        chosen = curriculum_saved.choose_saved(root, run_ids, names)
        if chosen is None:
            return
        curriculum, sources, name = chosen
        # Launch queues this very file rather than saving a copy of it.
        st.session_state["cur_current_file"] = str(data_curriculum.saved_path(root, name))
        versions = tuple(data.run_version(root, r) for r in sources)
        infos = [data.run_info(root, r, version) for r, version in zip(sources, versions)]
        summary = data.sample_summary_with_groups(root, tuple(sources), versions)
        strategy, score = str(curriculum.strategy or "file"), curriculum.metadata.get("score")
        curriculum_preview.show_preview(summary, curriculum, curriculum.metadata.get("kind"))
    else:
        built = build_from_scores(root, run_ids, names)
        if built is None:
            return
        sources, infos, curriculum, strategy, score = built
        st.session_state["cur_current_file"] = None
    rerun_section(root, runs, sources, infos, curriculum, strategy, score)


def build_from_scores(root: str, run_ids: list[str], names: dict[str, str]):
    """The source runs, strategy and parameters chosen, the curriculum built and previewed;
    returns (sources, their run infos, curriculum, strategy, score), or None (said why)."""
    all_versions = [data.run_version(root, r) for r in run_ids]
    # The newest run that presented every sample: a pruned rerun never scored its pruned samples.
    default = data_curriculum.first_fully_scored(root, run_ids, all_versions) or run_ids[0]
    coverage = {r: data_curriculum.unscored_count(root, r, v) for r, v in zip(run_ids, all_versions)}

    def source_label(run_id: str) -> str:
        unscored, samples = coverage.get(run_id, (0, 0))
        note = f", {unscored:,} of {samples:,} samples never presented" if unscored else ""
        return f"{names.get(run_id)} ({run_id}{note})"

    sources = st.multiselect("Source run(s): scores averaged over several (seeds)", run_ids, default=[default],
                             format_func=source_label, key="cur_sources")
    if not sources:
        st.info("Choose at least one source run.")
        return None
    versions = tuple(data.run_version(root, r) for r in sources)
    infos = [data.run_info(root, r, version) for r, version in zip(sources, versions)]
    tasks = {info.get("task") for info in infos}
    if len(tasks) > 1:
        st.warning("The chosen runs belong to different tasks; choose runs of one task.")
        return None
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
            return None
        score = col2.selectbox("Score", options, index=options.index("loss") if "loss" in options else 0,
                               key="cur_score")
        if "sequence" in kinds and score in data.SCORES and data.SCORES[score].needs == "correct":
            for info in infos:
                st.caption(f"{formatting.md_text(info.get('name'))}: " + formatting.correct_definition(
                    data.output_kind(info), info.get("sequence_correct_threshold")))
    seed = int(col3.number_input("Seed", value=0, step=1, key="cur_seed"))
    st.caption(spec.description)
    unscored = None
    missing = data_curriculum.unscored_mask(summary)
    if spec.needs_score and missing.any():
        never = [f"{names.get(r)} ({r})" for r, v in zip(sources, versions)
                 if data_curriculum.unscored_count(root, r, v)[0]]
        st.warning(f"{int(missing.sum()):,} of {len(summary):,} samples were never presented in run "
                   f"{', '.join(never)}, so they have no score: no strategy can rank them. Choose how to treat them.")
        unscored = st.radio("Samples never presented", data_curriculum.UNSCORED_CHOICES, index=None,
                            key="cur_unscored", horizontal=True, format_func={
                                "keep": "exclude from the ranking and keep them",
                                "drop": "exclude from the ranking and drop them"}.get)
        if unscored is None:
            st.info("Choose what to do with the samples that were never presented to see the preview.")
            return None
    if strategy == "relabel":
        window = data_curriculum.default_relabel_epochs(root, sources[0], versions[0]) or (0, 0)
        first, last = st.columns(2)
        low = int(first.number_input("Suggested labels from epoch", min_value=0, value=int(window[0]), step=1,
                                     key="cur_relabel_first"))
        high = int(last.number_input("to epoch", min_value=low, value=max(low, int(window[1])), step=1,
                                     key="cur_relabel_last"))
        st.caption("A sample's suggested label is the class its presentations predicted most often over these "
                   "epochs (default: the first half of the run, before flipped labels are memorised); its confidence is the share that predicted it.")
        summary = data_curriculum.with_suggestions(
            summary, data_curriculum.suggestions(root, tuple(sources), versions, (low, high)))
    params = {}
    param_cols = st.columns(max(1, len(spec.defaults)))
    for column, (name, default) in zip(param_cols, spec.defaults.items()):
        with column:
            params[name] = _param_widget(strategy, name, default)
    try:
        curriculum = data.build_curriculum(summary, strategy, score, seed=seed, task=tasks.pop(),
                                           source_runs=list(sources), unscored=unscored, **params)
    except data.CurriculumError as error:
        st.warning(f"Cannot build this curriculum: {error}")
        return None
    if strategy == "relabel":
        curriculum.metadata["relabel_epochs"] = [[low, high]]
    curriculum_preview.show_preview(summary, curriculum, spec.kind)

    return sources, infos, curriculum, strategy, score


def rerun_section(root: str, runs, sources: list[str], infos: list[dict], curriculum: data.Curriculum,
                  strategy: str, score: str | None) -> None:
    """Export, launch a rerun of the first source run, the store's jobs, earlier reruns."""
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
    del epochs, keep_steps  # read by curriculum_jobs.launch from the widgets' state
    st.session_state["cur_parent"] = sources[0]
    reason = curriculum_jobs.name_field(root, infos[0].get("name") or sources[0], strategy, score)
    blocking = curriculum_jobs.blocking_job(root, sources[0], curriculum)
    if blocking is not None:
        reason = f"this curriculum's rerun of this parent is already {blocking.state} as job {blocking.job_id}"
    st.button("Launch rerun", key="cur_launch", disabled=reason is not None, type="primary",
              on_click=curriculum_jobs.launch, help=reason)
    if reason is not None:
        st.caption(f"Launch is disabled: {reason}")
    if st.session_state.get("cur_launch_error"):
        st.error(f"Cannot launch: {st.session_state['cur_launch_error']}")
    curriculum_jobs.show_jobs(root)

    reruns = runs[runs["parent_run_id"].notna() & (runs["status"] == "finished")] if not runs.empty else runs
    if not reruns.empty:
        # Drawn only while open: a collapsed expander's charts and queries cost every rerun of
        # the page (benchmarks/bench_pages.py)
        earlier = st.expander("Compare an earlier rerun with its parent", key="cur_earlier_open", on_change="rerun")
        if not earlier.open:
            return
        with earlier:
            newest_first = reruns.sort_values("created_at", ascending=False, kind="stable")
            chosen = st.selectbox("Rerun", list(newest_first["run_id"]), key="cur_compare",
                                  format_func=lambda r: f"{dict(zip(runs['run_id'], runs['name'])).get(r)} ({r})")
            info = data.run_info(root, chosen, data.run_version(root, chosen))
            loaded = data.recorded_curriculum(root, info)
            if info.get("parent_run_id") in data.run_ids(root):
                curriculum_outcome.show_outcome(root, info["parent_run_id"], chosen, loaded, "cur_earlier",
                                                curriculum_jobs.queue_seed_reruns)


main()
