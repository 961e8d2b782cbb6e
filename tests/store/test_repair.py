"""trainmap repair (store.repair): runs a dead process left behind get the status readers show
and are compacted, with every recorded row kept once; live and healthy runs are left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from store import Store, dynamics
from store.repair import needs_compaction, repair_run
from training import Recorder

ROOT = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def recorded_run(store_path, epochs: int, max_epochs: int | None) -> tuple[Store, str]:
    """A run whose process 'died' after ``epochs`` epochs: rows on disk, never finished."""
    rec = Recorder(store_path, task="t", max_epochs=max_epochs)
    rec.start()
    for epoch in range(epochs):
        rec.log_batch(torch.arange(6), torch.randn(6, 3), torch.arange(6) % 3, step=epoch)
        rec.end_epoch()
    rec.sync()
    rec._writer.close()  # the writer wrote what it was handed; nobody finishes the run
    rec._stop_heartbeat()
    store = Store(store_path)
    store.update_run(rec.run_id, pid=dead_pid())
    return store, rec.run_id


def test_a_run_left_running_is_marked_interrupted_and_compacted_with_its_rows(tmp_path):
    store, run_id = recorded_run(tmp_path / "store", epochs=2, max_epochs=5)
    before = dynamics(store, run_id)
    assert len(before) == 12 and needs_compaction(store, run_id)
    done = repair_run(store, run_id)
    assert done.startswith("marked interrupted (its training process (pid") and done.endswith("compacted")
    info = store.run_info(run_id)
    assert info["status"] == "interrupted" and info["finished_at"] and info["compacted"]
    after = dynamics(store, run_id)
    assert len(after) == 12 and after.sort_values(["epoch", "sample_id"]).reset_index(drop=True).equals(
        before.sort_values(["epoch", "sample_id"]).reset_index(drop=True))
    assert not needs_compaction(store, run_id) and repair_run(store, run_id) is None  # nothing left to do


def test_a_run_that_died_while_compacting_is_finished(tmp_path):
    store, run_id = recorded_run(tmp_path / "store", epochs=2, max_epochs=2)
    assert repair_run(store, run_id) == (
        "marked finished (all 2 epochs recorded; its process died while compacting); compacted")
    assert store.run_info(run_id)["status"] == "finished" and len(dynamics(store, run_id)) == 12


def test_live_and_finished_runs_are_left_alone_and_the_command_says_so(tmp_path):
    store_path = tmp_path / "store"
    with Recorder(store_path, task="t") as rec:
        rec.log_batch(torch.arange(4), torch.randn(4, 3), torch.arange(4) % 3, step=0)
        rec.end_epoch()
        assert repair_run(Store(store_path), rec.run_id) is None  # running, alive (this process)
    assert repair_run(Store(store_path), rec.run_id) is None  # finished and compacted
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "training.cli", "repair", "--store", str(store_path)],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "nothing to repair"
    result = subprocess.run([sys.executable, "-m", "training.cli", "repair", "--store", str(store_path), "--run", "nope"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 1 and "run 'nope' not found" in result.stderr and "Traceback" not in result.stderr
