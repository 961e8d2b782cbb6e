"""The dashboard's door to the store's rerun jobs (``store.jobs``) and step progress
(``store.progress``): cached listing, submit (which starts the local executor when none
is alive), cancel."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import streamlit as st

from dashboard import launcher
from store.curriculum.format import save_curriculum
from store.jobs import (Job, JobError, JobListing, cancel, curriculum_sha256, executor_holder, jobs_dir, list_jobs,
                        submit)
from store.progress import StepProgress, read_progress

__all__ = ["Job", "JobError", "JobListing", "StepProgress", "active_job_for", "cancel_job", "curriculum_key",
           "job_listing", "jobs_version", "progress_of", "submit_rerun"]


def jobs_version(root: str) -> tuple[tuple[str, int], ...]:
    """(file name, mtime) of every job record: changes when a job is queued, moves on or is
    touched by its executor; the cache key of ``job_listing``."""
    folder = jobs_dir(root)
    if not folder.is_dir():
        return ()
    version = []
    for entry in os.scandir(folder):
        if entry.name.endswith(".json") or entry.name.endswith(".cancel"):
            try:
                version.append((entry.name, entry.stat().st_mtime_ns))
            except OSError:
                continue
    return tuple(sorted(version))


@st.cache_data(show_spinner=False, max_entries=16, ttl=30)
def _listing(root: str, version: tuple) -> JobListing:
    del version
    return list_jobs(root)


def job_listing(root: str, version: tuple) -> JobListing:
    """The store's jobs, newest first (a running job whose executor died shows ``failed``:
    cached for at most 30 s, the bound on how long a dead executor's job shows running)."""
    launcher.reap()  # an executor of ours that ended is then no longer "alive" as a zombie
    return _listing(root, version)


def progress_of(root: str, run_id: str | None) -> StepProgress | None:
    """The run's last published step progress (a small file, read uncached)."""
    return read_progress(root, run_id) if run_id else None


def submit_rerun(root: str, *, parent_run_id: str, parent_config: dict[str, Any], curriculum: str | os.PathLike[str],
                 name: str, epochs: int | None = None, keep_steps: bool | None = None, seed: int | None = None) -> Job:
    """Queue a rerun of ``parent_run_id`` with ``curriculum`` (saved in the store) and start the
    local executor when no live one holds the store. ``LaunchError``/``JobError`` say why not."""
    launcher.check_can_train()
    args = launcher.rerun_args(parent_config, curriculum, store=root, name=name, epochs=epochs,
                               keep_steps=keep_steps, seed=seed)
    job = submit(root, parent_run_id=parent_run_id, curriculum=Path(curriculum), args=args, run_name=name)
    launcher.reap()
    if executor_holder(root) is None:
        launcher.start_executor(root)
    _listing.clear()
    return job


def cancel_job(root: str, job_id: str) -> Job:
    job = cancel(root, job_id)
    _listing.clear()
    return job


def curriculum_key(curriculum: Any) -> str:
    """What identifies a curriculum's content in a job (``store.jobs.curriculum_sha256``),
    for one not saved yet: it is written to a temporary file and read back, as a job's is."""
    with tempfile.TemporaryDirectory(prefix="trainmap-curriculum-") as folder:
        return curriculum_sha256(save_curriculum(curriculum, Path(folder) / "curriculum.parquet"))


def active_job_for(listing: JobListing, parent_run_id: str, key: str) -> Job | None:
    """The queued or running job that reruns ``parent_run_id`` with the curriculum ``key``."""
    for job in listing.jobs:
        if job.active and job.parent_run_id == parent_run_id and job.curriculum_sha256 == key:
            return job
    return None
