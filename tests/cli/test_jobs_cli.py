"""``trainmap jobs``: the executor drains queued reruns one after another into the store;
``list`` and ``cancel``; a running job cancelled leaves its run interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dashboard import launcher
from store import Store, epoch_metrics, jobs
from store.progress import read_progress

REPO = Path(__file__).resolve().parents[2]
TRAINMAP = str(Path(sys.executable).with_name("trainmap"))
NOISY_S0, NOISY_S1 = "20261126-132606-daddb8", "20261126-132613-99d44c"
CURRICULUM = "curricula/noise20-s0-drop-loss-20.parquet"


@pytest.fixture
def root(tmp_path) -> Path:
    shutil.copytree(REPO / "sample_runs", tmp_path / "store")
    return tmp_path / "store"


def trainmap(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([TRAINMAP, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def queue(root: Path, parent: str, name: str, epochs: int) -> jobs.Job:
    config = Store(root).run_info(parent)["config"]
    args = launcher.rerun_args(config, root / CURRICULUM, store=root, name=name, epochs=epochs)
    return jobs.submit(root, parent_run_id=parent, curriculum=root / CURRICULUM, args=args, run_name=name)


def test_list_and_cancel_in_one_line_each(root):
    assert trainmap("jobs", "list", "--store", str(root)).stdout.strip() == "no jobs"
    job = queue(root, NOISY_S0, "r1", 2)
    listed = trainmap("jobs", "list", "--store", str(root)).stdout.strip().split("\t")
    assert listed[:4] == [job.job_id, "queued", "r1", "-"]
    result = trainmap("jobs", "cancel", job.job_id, "--store", str(root))
    assert result.returncode == 0 and result.stdout.strip() == f"{job.job_id}: cancelled"
    again = trainmap("jobs", "cancel", job.job_id, "--store", str(root))
    assert again.returncode == 1 and again.stderr.strip() == (
        f"trainmap: error: job {job.job_id} is already cancelled; only a queued or running job can be cancelled")
    unknown = trainmap("jobs", "cancel", "job-nope", "--store", str(root))
    assert unknown.returncode == 1 and unknown.stderr.strip() == (
        f"trainmap: error: no job 'job-nope' in store {str(root)!r} (see `trainmap jobs list`)")
    (root / "jobs" / "job-20260101-000000-aaaaaa.json").write_text("[]")
    damaged = trainmap("jobs", "list", "--store", str(root))
    assert damaged.returncode == 0 and damaged.stdout.count("\n") == 1
    assert damaged.stderr.count("\n") == 1 and "job-20260101-000000-aaaaaa.json is damaged" in damaged.stderr


def test_an_executor_with_an_empty_queue_or_a_live_rival_exits_at_once(root):
    result = trainmap("jobs", "run", "--store", str(root))
    assert result.returncode == 0 and "ran 0 job(s)" in result.stderr
    assert jobs.acquire_executor_lock(root)  # this test process is the live executor now
    rival = trainmap("jobs", "run", "--store", str(root))
    assert rival.returncode == 0 and f"another executor (pid {os.getpid()}" in rival.stderr
    jobs.release_executor_lock(root)


@pytest.mark.slow
def test_the_executor_runs_two_queued_reruns_one_after_another(root):
    first = queue(root, NOISY_S0, "noise20-s0-rerun", 2)
    second = queue(root, NOISY_S1, "noise20-s1-rerun", 2)  # the sibling seed, same curriculum
    result = trainmap("jobs", "run", "--store", str(root), timeout=500)
    assert result.returncode == 0, result.stderr
    assert "ran 2 job(s)" in result.stderr
    store = Store(root)
    done = [jobs.get_job(root, job.job_id) for job in (first, second)]
    for job, parent in zip(done, (NOISY_S0, NOISY_S1)):
        log = (root / job.log_path).read_text()
        assert job.state == "finished" and job.returncode == 0 and job.error is None, log[-2000:]
        assert f"run_id: {job.run_id}" in log
        info = store.run_info(job.run_id)
        assert info["status"] == "finished" and info["name"] == job.run_name and info["epochs_done"] == 2
        assert info["parent_run_id"] == NOISY_S0  # the curriculum's source run
        assert list(epoch_metrics(store, job.run_id)["epoch"]) == [0, 1]
        parent_config = store.run_info(parent)["config"]
        for key, value in parent_config.items():  # every setting repeated, GraNd's schedule included
            if key not in ("curriculum", "name", "store", "epochs"):
                assert info["config"][key] == value, key
        assert info["config"]["epochs"] == 2 and info["config"]["grand"] == "on"
        assert (root / job.curriculum).samefile(info["config"]["curriculum"])
        progress = read_progress(root, job.run_id)
        assert progress is not None and progress.step == progress.total_steps > 0 and progress.max_epochs == 2
    assert done[0].ended_at <= done[1].started_at  # one after another
    assert jobs.executor_holder(root) is None and not (root / "jobs" / jobs.EXECUTOR_LOCK).exists()


@pytest.mark.slow
def test_cancelling_a_running_job_stops_its_training_and_keeps_the_run_interrupted(root):
    job = queue(root, NOISY_S0, "to-cancel", 20)
    executor = subprocess.Popen([TRAINMAP, "jobs", "run", "--store", str(root)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            current = jobs.get_job(root, job.job_id)
            progress = read_progress(root, current.run_id) if current.run_id else None
            if progress is not None and progress.step > 0:
                break
            assert executor.poll() is None and time.monotonic() < deadline, (root / job.log_path).read_text()
            time.sleep(0.5)
        assert current.state == "running" and current.child_pid is not None
        result = trainmap("jobs", "cancel", job.job_id, "--store", str(root))
        assert result.returncode == 0 and result.stdout.strip() == f"{job.job_id}: cancelled"
        executor.wait(timeout=120)
    finally:
        if executor.poll() is None:
            os.killpg(executor.pid, signal.SIGKILL)
    final = jobs.get_job(root, job.job_id)
    assert final.state == "cancelled" and final.returncode not in (None, 0)
    state = Store(root).run_state(final.run_id)
    assert state["status"] == "interrupted", json.dumps(state)[:500]
    assert state["epochs_done"] < 20
