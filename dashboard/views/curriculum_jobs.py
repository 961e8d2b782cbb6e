"""Curriculum page, reruns: save or launch the previewed curriculum and follow the launched
rerun until its outcome."""

from __future__ import annotations

import streamlit as st

from dashboard import data, launcher
from dashboard.views import curriculum_outcome

LAUNCH_KEY = "curriculum_launch"


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


def show_progress(root: str) -> None:
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
        curriculum_outcome.show_outcome(root, parent, status["run_id"], curriculum, "cur_live")


def save() -> None:
    curriculum, root, _ = st.session_state["cur_current"]
    st.session_state["cur_saved"] = str(data.save_curriculum(curriculum, root))


def launch() -> None:
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
