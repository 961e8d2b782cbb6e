"""Rerun jobs in the store (``store.jobs``) and step progress (``store.progress``): submit,
duplicates, cancel, claims by two processes at once, damaged records, dead executors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from store import jobs
from store.progress import StepProgress, progress_path, read_progress, write_progress

REPO = Path(__file__).resolve().parents[2]
SAMPLE_CURRICULUM = REPO / "sample_runs" / "curricula" / "noise20-s0-drop-loss-20.parquet"
ARGS = ["train", "--task", "mnist1d", "--model", "cnn", "--epochs", "2", "--seed", "0"]


@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "curricula").mkdir()
    shutil.copy(SAMPLE_CURRICULUM, tmp_path / "curricula" / "c.parquet")
    return tmp_path


def _submit(root: Path, name: str = "r1", parent: str = "p1", args: list[str] = ARGS,
            curriculum: str = "curricula/c.parquet") -> jobs.Job:
    full = [*args, "--name", name, "--store", str(root), "--curriculum", str(root / curriculum)]
    return jobs.submit(root, parent_run_id=parent, curriculum=root / curriculum, args=full, run_name=name)


def test_submit_records_the_job_and_lists_newest_first(root):
    first = _submit(root, "r1")
    second = _submit(root, "r2", args=[*ARGS, "--lr", "0.01"])
    stored = json.loads((root / "jobs" / f"{first.job_id}.json").read_text())
    assert stored["state"] == "queued" and stored["parent_run_id"] == "p1"
    assert stored["curriculum"] == "curricula/c.parquet" and stored["run_name"] == "r1"
    assert stored["args"][:3] == ["train", "--task", "mnist1d"]
    assert stored["log_path"] == f"jobs/logs/{first.job_id}.log"
    assert jobs.get_job(root, first.job_id) == first
    listing = jobs.list_jobs(root)
    assert first.created_at < second.created_at
    assert [job.job_id for job in listing.jobs] == [second.job_id, first.job_id]
    assert listing.warnings == ()


def test_a_duplicate_is_refused_naming_the_job_until_it_is_cancelled(root):
    first = _submit(root, "r1")
    with pytest.raises(jobs.JobError, match=f"already queued as job {first.job_id}"):
        _submit(root, "another-name")  # a new name is not a new rerun
    other_parent = _submit(root, "r3", parent="p2")
    other_settings = _submit(root, "r4", args=[*ARGS[:-1], "1"])  # --seed 1
    assert len({first.job_id, other_parent.job_id, other_settings.job_id}) == 3
    cancelled = jobs.cancel(root, first.job_id)
    assert cancelled.state == "cancelled" and cancelled.ended_at
    assert _submit(root, "r1-again").state == "queued"
    finished = jobs.write_job(root, replace(other_parent, state="finished"))
    with pytest.raises(jobs.JobError, match=f"already finished as job {finished.job_id}"):
        _submit(root, "r5", parent="p2")


def test_the_same_curriculum_rebuilt_later_is_the_same_content(root):
    from store.curriculum.format import load_curriculum, save_curriculum

    curriculum = load_curriculum(root / "curricula" / "c.parquet")
    curriculum.metadata["created_at"] = "2030-01-01T00:00:00+00:00"  # built again, later
    save_curriculum(curriculum, root / "curricula" / "same.parquet")
    curriculum.table.loc[curriculum.table.index[0], "weight"] = 0.5  # one weight changed
    save_curriculum(curriculum, root / "curricula" / "changed.parquet")
    first = _submit(root, "r1")
    with pytest.raises(jobs.JobError, match=first.job_id):
        _submit(root, "r2", curriculum="curricula/same.parquet")
    assert _submit(root, "r3", curriculum="curricula/changed.parquet").curriculum_sha256 != first.curriculum_sha256


def test_refusals_name_what_was_wrong(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "c.parquet"
    shutil.copy(SAMPLE_CURRICULUM, outside)
    with pytest.raises(jobs.JobError, match="is not inside the store"):
        jobs.submit(root, parent_run_id="p", curriculum=outside, args=ARGS, run_name="x")
    with pytest.raises(jobs.JobError, match="runs `trainmap train ...`"):
        jobs.submit(root, parent_run_id="p", curriculum=root / "curricula" / "c.parquet", args=["ui"], run_name="x")
    with pytest.raises(jobs.JobError, match="no job 'job-20990101-000000-000000'"):
        jobs.cancel(root, "job-20990101-000000-000000")
    with pytest.raises(jobs.JobError, match="invalid job id '../x'"):
        jobs.get_job(root, "../x")
    job = jobs.cancel(root, _submit(root).job_id)
    with pytest.raises(jobs.JobError, match="already cancelled"):
        jobs.cancel(root, job.job_id)


def test_a_claimed_job_cannot_be_claimed_again_and_a_cancelled_one_is_never_claimed(root):
    first, second = _submit(root, "r1"), _submit(root, "r2", parent="p2")
    jobs.cancel(root, first.job_id)
    claimed = jobs.claim_next(root)
    assert claimed.job_id == second.job_id and claimed.state == "running"
    assert claimed.pid == os.getpid() and claimed.started_at
    assert jobs.claim_next(root) is None


CLAIMER = """
import sys, time
from store import jobs
root, until = sys.argv[1], float(sys.argv[2])
while time.time() < until:
    time.sleep(0.001)
taken = []
while (job := jobs.claim_next(root)) is not None:
    taken.append(job.job_id)
print(" ".join(taken))
"""


def test_two_processes_claiming_at_once_never_take_the_same_job(root):
    submitted = {_submit(root, f"r{i}", parent=f"p{i}").job_id for i in range(12)}
    start = time.time() + 2.0  # both processes begin claiming at the same moment
    processes = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(root), str(start)], cwd=REPO,
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
    taken = [process.communicate(timeout=60)[0].split() for process in processes]
    assert all(process.returncode == 0 for process in processes)
    assert set(taken[0]).isdisjoint(taken[1])
    assert set(taken[0]) | set(taken[1]) == submitted
    assert len(taken[0]) + len(taken[1]) == len(submitted)


def test_a_damaged_job_file_is_one_warning_and_the_others_are_listed(root):
    good = _submit(root, "r1")
    (root / "jobs" / "job-20260101-000000-aaaaaa.json").write_text("{not json")
    bad_state = json.loads((root / "jobs" / f"{good.job_id}.json").read_text())
    bad_state.update(job_id="job-20260101-000000-bbbbbb", state="exploded")
    (root / "jobs" / "job-20260101-000000-bbbbbb.json").write_text(json.dumps(bad_state))
    listing = jobs.list_jobs(root)
    assert [job.job_id for job in listing.jobs] == [good.job_id]
    assert len(listing.warnings) == 2
    assert "job-20260101-000000-aaaaaa.json" in listing.warnings[0]
    assert "job-20260101-000000-bbbbbb.json is damaged: 'state' is 'exploded'" in listing.warnings[1]


def test_a_running_job_whose_executor_is_gone_is_shown_failed(root):
    _submit(root)
    job = jobs.claim_next(root)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = jobs.write_job(root, replace(job, pid=int(dead.stdout)))
    shown = jobs.list_jobs(root).jobs[0]
    assert shown.state == "failed" and f"pid {gone.pid}" in shown.error
    assert jobs.get_job(root, job.job_id).state == "running"  # the record itself is not rewritten
    alive = jobs.write_job(root, replace(job, pid=os.getpid()))
    assert jobs.list_jobs(root).jobs[0].state == "running"
    later = time.time() + jobs.STALE_AFTER_SECS + 5  # not touched for longer than allowed
    assert jobs.shown(root, alive, now=later).state == "failed"


def test_only_one_live_executor_holds_the_lock(root):
    assert jobs.acquire_executor_lock(root)
    holder = [sys.executable, "-c", f"from store import jobs; print(jobs.acquire_executor_lock({str(root)!r}))"]
    assert subprocess.run(holder, cwd=REPO, capture_output=True, text=True).stdout.strip() == "False"
    jobs.release_executor_lock(root)
    assert jobs.executor_holder(root) is None
    # A process that took the lock and died: the next one replaces its stale lock.
    assert subprocess.run(holder, cwd=REPO, capture_output=True, text=True).stdout.strip() == "True"
    assert jobs.executor_holder(root) is None
    assert jobs.acquire_executor_lock(root)
    assert jobs.executor_holder(root)["pid"] == os.getpid()


def test_step_progress_round_trip_and_damaged_file(tmp_path):
    (tmp_path / "runs" / "r").mkdir(parents=True)
    assert read_progress(tmp_path, "r") is None
    write_progress(tmp_path, "r", StepProgress(step=120, total_steps=1260, epoch=1, max_epochs=20))
    progress = read_progress(tmp_path, "r")
    assert progress == StepProgress(120, 1260, 1, 20)
    assert progress.text() == "step 120/1260 · epoch 2/20" and progress.fraction == pytest.approx(120 / 1260)
    progress_path(tmp_path, "r").write_text('{"step": -1, "epoch": 0}')
    assert read_progress(tmp_path, "r") is None
