"""An online rule survives `trainmap train --resume`: the latest losses InfoBatch plans from
are in the run's checkpoint, so a run killed and resumed presents the same samples, with the
same losses, as one that was never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from store import Store, dynamics

pytest.importorskip("lightning")
ROOT = Path(__file__).resolve().parents[2]
EPOCHS = "6"


def trainmap(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1].removeprefix("run_id: ")


@pytest.mark.slow
def test_infobatch_resumed_after_a_kill_draws_what_an_unstopped_run_draws(tmp_path):
    store_path = tmp_path / "store"
    parent = trainmap("train", "--task", "digits", "--model", "mlp", "--epochs", "2", "--no-progress",
                      "--store", str(store_path))
    curriculum = tmp_path / "infobatch.parquet"
    subprocess.run([sys.executable, "-m", "training.cli", "curriculum", "--run", parent, "--strategy", "infobatch",
                    "-o", str(curriculum), "--store", str(store_path)], cwd=ROOT, check=True, capture_output=True)
    rerun = ["train", "--task", "digits", "--model", "mlp", "--epochs", EPOCHS, "--curriculum", str(curriculum),
             "--no-progress", "--store", str(store_path)]
    whole = trainmap(*rerun)

    store = Store(store_path)
    before = set(store.run_ids())
    killed = subprocess.Popen([sys.executable, "-m", "training.cli", *rerun], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    stopped = None
    while time.monotonic() < deadline and stopped is None:
        for run_id in set(store.run_ids()) - before:
            if (store.run_dir(run_id) / "checkpoint.ckpt").exists() and store.run_info(run_id).get("epochs_done", 0) >= 2:
                stopped = run_id
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)  # the trainer and its writer, mid-run
    killed.wait()
    assert stopped is not None and store.run_info(stopped)["epochs_done"] < int(EPOCHS)
    assert trainmap("train", "--resume", stopped, "--no-progress", "--store", str(store_path)) == stopped

    expected, resumed = dynamics(store, whole), dynamics(store, stopped)
    sizes = expected.groupby("epoch").size()
    assert sizes[0] > sizes[1:-1].max()  # InfoBatch pruned the middle epochs
    for epoch in range(int(EPOCHS)):
        a = expected[expected["epoch"] == epoch].sort_values("sample_id")
        b = resumed[resumed["epoch"] == epoch].sort_values("sample_id")
        assert a["sample_id"].tolist() == b["sample_id"].tolist(), epoch
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(b["weight"], a["weight"])
