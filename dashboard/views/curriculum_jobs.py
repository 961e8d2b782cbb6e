"""Curriculum page, reruns: save the previewed curriculum, queue reruns with it as jobs in
the store, and show the store's jobs (every tab, after a reload too) with their step
progress and a Cancel button."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import data, data_jobs, launcher
from dashboard.views import curriculum_outcome

#: The job this tab queued last: its outcome is shown when it finishes.
LAST_JOB_KEY = "cur_last_job"
#: Ended jobs listed under the live ones.
ENDED_SHOWN = 10


def save() -> None:
    curriculum, root, _ = st.session_state["cur_current"]
    st.session_state["cur_saved"] = str(data.save_curriculum(curriculum, root))


def launch() -> None:
    """Save the curriculum into the store and queue ``trainmap train`` with it as a job."""
    curriculum, root, parent_config = st.session_state["cur_current"]
    parent_run_id = st.session_state["cur_parent"]
    st.session_state["cur_launch_error"] = None
    try:
        launcher.check_can_train()  # before anything is saved: a refused launch creates nothing
        name = launcher.check_name(str(st.session_state.get("cur_name") or "").strip())
        saved = st.session_state.get("cur_current_file")  # a saved file chosen as the start
        path = Path(saved) if saved else data.save_curriculum(curriculum, root)
        job = data_jobs.submit_rerun(
            root, parent_run_id=parent_run_id, parent_config=parent_config, curriculum=path, name=name,
            epochs=int(st.session_state.get("cur_epochs") or 1),
            keep_steps=bool(st.session_state.get("cur_keep_steps")))
        st.session_state[LAST_JOB_KEY] = job.job_id
        taken = _run_names(root) | set(_job_names(root)) | {name}
        st.session_state["cur_name"] = launcher.free_name(name, taken)  # the next launch gets a new name
    except (launcher.LaunchError, data_jobs.JobError, data.CurriculumError, OSError) as error:
        st.session_state["cur_launch_error"] = str(error)


def _run_names(root: str) -> set[str]:
    runs = data.runs_frame(root, data.listing_version(root))
    return set(runs["name"].dropna()) if not runs.empty else set()


def _job_names(root: str) -> dict[str, data_jobs.Job]:
    """The rerun names of the jobs that will make (or made) a run: not the cancelled or failed."""
    jobs = data_jobs.job_listing(root, data_jobs.jobs_version(root)).jobs
    return {job.run_name: job for job in jobs if job.state in ("queued", "running", "finished")}


def name_field(root: str, parent_name: str, strategy: str, score: str | None) -> str | None:
    """The rerun's name field, suggested as ``<parent name>-<strategy>-<score>`` (a name no
    run holds yet); returns why the name cannot be used, or None."""
    taken, queued = _run_names(root), _job_names(root)
    suggested = launcher.suggest_name(parent_name, strategy, score, taken | set(queued))
    # The suggestion follows the strategy and score until the user types a name of their own.
    if st.session_state.get("cur_name") in (None, "", st.session_state.get("cur_name_suggested")):
        st.session_state["cur_name"] = suggested
    st.session_state["cur_name_suggested"] = suggested
    name = st.text_input("Rerun name", key="cur_name", max_chars=80,
                         help="letters, digits, '.', '_' and '-'; suggested: <parent name>-<strategy>-<score>")
    try:
        name = launcher.check_name(name.strip())
    except launcher.LaunchError as error:
        return str(error)
    if name in queued:
        return f"job {queued[name].job_id} ({queued[name].state}) already names its rerun {name!r}; choose another name"
    if name in taken:
        return f"a run is already called {name!r}; choose another name"
    return None


def blocking_job(root: str, parent_run_id: str, curriculum: data.Curriculum) -> data_jobs.Job | None:
    """The queued or running job of the same parent and curriculum (Launch is disabled)."""
    listing = data_jobs.job_listing(root, data_jobs.jobs_version(root))
    if not any(job.active for job in listing.jobs):
        return None
    return data_jobs.active_job_for(listing, parent_run_id, data_jobs.curriculum_key(curriculum))


def queue_seed_reruns(root: str, parent_run_ids: list[str], curriculum_path: str) -> list[str]:
    """One job per parent run (sibling seeds), each repeating that parent's settings (its own
    seed included) with the curriculum ``curriculum_path`` (a file inside the store); returns
    the job ids. A parent whose job would duplicate a queued, running or finished one raises
    ``data_jobs.JobError`` naming it (the jobs queued before it stay queued)."""
    runs = data.runs_frame(root, data.listing_version(root))
    taken = set(runs["name"].dropna()) if not runs.empty else set()
    job_ids = []
    for parent_run_id in parent_run_ids:
        info = data.run_info(root, parent_run_id, data.run_version(root, parent_run_id))
        name = launcher.suggest_name(str(info.get("name") or parent_run_id), "rerun", Path(curriculum_path).stem, taken)
        taken.add(name)
        job = data_jobs.submit_rerun(root, parent_run_id=parent_run_id, parent_config=info.get("config") or {},
                                     curriculum=curriculum_path, name=name)
        job_ids.append(job.job_id)
    return job_ids


def _cancel(root: str, job_id: str) -> None:
    try:
        data_jobs.cancel_job(root, job_id)
    except data_jobs.JobError as error:
        st.session_state["cur_cancel_error"] = str(error)


def _progress_text(root: str, job: data_jobs.Job) -> tuple[float, str]:
    progress = data_jobs.progress_of(root, job.run_id)
    if progress is not None:
        return progress.fraction, progress.text()
    return 0.0, "starting" if job.state == "running" else "waiting for the jobs before it"


def _show_active(root: str, jobs: list[data_jobs.Job]) -> None:
    for job in jobs:
        text, button = st.columns([5, 1])
        fraction, detail = _progress_text(root, job)
        text.progress(fraction, text=f"**{job.run_name}** · {job.state} · {detail} · job {job.job_id}")
        button.button("Cancel", key=f"cur_cancel_{job.job_id}", on_click=_cancel, args=(root, job.job_id))


@st.fragment(run_every=2)
def _live_jobs(root: str) -> None:
    """Re-rendered every 2 s while jobs are queued or running; when none is left, the
    whole page reruns once (Launch comes back, the outcome renders without a timer)."""
    listing = data_jobs.job_listing(root, data_jobs.jobs_version(root))
    active = [job for job in listing.jobs if job.active]
    if not active:
        st.rerun()
    _show_active(root, active)


def _when(stamp: str | None) -> str:
    """``2026-12-03 22:26:02`` (UTC) from a job's ISO time."""
    return (stamp or "")[:19].replace("T", " ")


def show_jobs(root: str) -> None:
    """The store's jobs, newest first: queued and running ones live, with Cancel; the
    last ended ones as a table; the outcome of the job this tab queued once it finished."""
    listing = data_jobs.job_listing(root, data_jobs.jobs_version(root))
    for warning in listing.warnings:
        st.warning(warning)
    if st.session_state.get("cur_cancel_error"):
        st.error(f"Cannot cancel: {st.session_state.pop('cur_cancel_error')}")
    if not listing.jobs:
        return
    st.markdown("**Rerun jobs** (newest first; they run one after another on this machine)")
    if any(job.active for job in listing.jobs):
        _live_jobs(root)
    ended = [job for job in listing.jobs if not job.active][:ENDED_SHOWN]
    if ended:
        st.dataframe([{"name": job.run_name, "state": job.state, "run": job.run_id or "", "note": job.error or "",
                       "queued at": _when(job.created_at), "ended at": _when(job.ended_at),
                       "parent": job.parent_run_id, "job": job.job_id} for job in ended],
                     hide_index=True, key="cur_jobs_ended")
    mine = next((job for job in listing.jobs if job.job_id == st.session_state.get(LAST_JOB_KEY)), None)
    if mine is None or mine.active:
        return
    if mine.state == "cancelled":
        st.info(f"rerun {mine.run_name} cancelled ({mine.error or 'by a user'})")
        return
    if mine.state != "finished":
        st.error(f"rerun {mine.run_name} {mine.state}: {mine.error or ''}")
        return
    st.success(f"rerun {mine.run_name} finished: run {mine.run_id}")
    info = data.run_info(root, mine.run_id, data.run_version(root, mine.run_id))
    parent = info.get("parent_run_id")
    if parent and parent in data.run_ids(root):
        curriculum_outcome.show_outcome(root, parent, mine.run_id, data.recorded_curriculum(root, info), "cur_live",
                                        queue_seed_reruns)
