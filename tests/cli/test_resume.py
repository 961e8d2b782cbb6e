"""trainmap train --resume: a stopped run goes on from its last whole epoch, with more epochs,
and every epoch is recorded exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store import Store, dynamics, epoch_metrics
from store.queries import steps

ROOT = Path(__file__).resolve().parents[2]
DIGITS_TRAIN = 1437  # training samples of the digits task


def trainmap(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600, **kwargs)


@pytest.mark.slow
def test_a_killed_run_resumes_with_more_epochs_and_no_duplicate_rows(tmp_path):
    store_path = tmp_path / "store"
    training = subprocess.Popen(
        [sys.executable, "-m", "training.cli", "train", "--task", "digits", "--model", "mlp", "--epochs", "30",
         "--store", str(store_path), "--no-progress"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    store = Store(store_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        run_ids = store.run_ids() if (store_path / "runs").exists() else []
        if run_ids and (store.run_dir(run_ids[0]) / "checkpoint.ckpt").exists() \
                and store.run_info(run_ids[0]).get("epochs_done", 0) >= 2:
            break
        time.sleep(0.05)
    os.killpg(training.pid, signal.SIGKILL)  # trainer and writer: nothing can write after this
    training.wait()
    (run_id,) = store.run_ids()
    assert store.run_state(run_id)["status"] == "interrupted"

    refused = trainmap("train", "--resume", run_id, "--epochs", "1", "--store", str(store_path))
    assert refused.returncode == 1 and "expected --epochs above" in refused.stderr
    result = trainmap("train", "--resume", run_id, "--epochs", "5", "--store", str(store_path), "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith(f"run_id: {run_id}")
    info = store.run_info(run_id)
    assert info["status"] == "finished" and info["epochs_done"] == 5 and info["max_epochs"] == 5
    rows = dynamics(store, run_id)
    assert rows.groupby("epoch").size().to_dict() == {epoch: DIGITS_TRAIN for epoch in range(5)}
    assert not rows.duplicated(["epoch", "sample_id"]).any()
    recorded_steps = steps(store, run_id)["step"]
    assert recorded_steps.is_unique and recorded_steps.tolist() == list(range(len(recorded_steps)))
    assert epoch_metrics(store, run_id)["epoch"].tolist() == list(range(5))
