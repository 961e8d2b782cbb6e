"""Runs whose training process is gone read as interrupted (store.layout.Store.run_state):
by a stale heartbeat, or by a dead pid on this host; nothing is written when reading."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from store import Store, runs_table
from store.layout import HEARTBEAT_FILE, STALE_AFTER_SECS


def running_run(tmp_path, **fields):
    store = Store(tmp_path / "store", create=True)
    run_id = store.create_run(name="r", task="t", model="m")
    if fields:
        store.update_run(run_id, **fields)
    return store, run_id


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_live_run_reads_running_and_a_stale_heartbeat_reads_interrupted(tmp_path):
    store, run_id = running_run(tmp_path)  # created by this (live) process, on this host
    store.beat(run_id)
    assert store.run_state(run_id)["status"] == "running"
    beat = (store.run_dir(run_id) / HEARTBEAT_FILE).stat().st_mtime
    late = store.run_state(run_id, now=beat + STALE_AFTER_SECS + 1)
    assert late["status"] == "interrupted" and "no heartbeat from its training process since" in late["error"]
    assert store.run_state(run_id, now=beat + STALE_AFTER_SECS - 1)["status"] == "running"
    assert store.run_info(run_id)["status"] == "running"  # reading wrote nothing


def test_a_dead_pid_on_this_host_reads_interrupted_and_on_another_host_is_left_to_the_heartbeat(tmp_path):
    pid = dead_pid()
    store, run_id = running_run(tmp_path, pid=pid)
    state = store.run_state(run_id)
    assert state["status"] == "interrupted" and f"pid {pid}" in state["error"]
    assert runs_table(store).set_index("run_id").loc[run_id, "status"] == "interrupted"
    store.update_run(run_id, host=socket.gethostname() + "-elsewhere")
    assert store.run_state(run_id)["status"] == "running"  # no heartbeat file yet, another host: no evidence
    for status in ("finished", "failed"):
        store.update_run(run_id, status=status)
        assert store.run_state(run_id)["status"] == status  # only "running" is ever re-read


def test_a_training_killed_with_its_whole_process_group_reads_interrupted(tmp_path):
    """SIGKILL to the process group (a scheduler's kill, an OOM kill of the job): neither the
    trainer nor the writer child can write anything; the reader still says what happened."""
    script = f"""
import torch, time
from training import Recorder
with Recorder({str(tmp_path / 'store')!r}, task="t") as rec:
    rec.log_batch(torch.arange(4), torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), step=0)
    rec.end_epoch()
    rec.drain()
    print(rec.run_id, flush=True)
    time.sleep(60)
"""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    run_id = process.stdout.readline().strip()
    store = Store(tmp_path / "store")
    assert store.run_state(run_id)["status"] == "running"
    os.killpg(process.pid, 9)
    process.wait()
    deadline = time.monotonic() + 10
    while store.run_info(run_id)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)  # the writer child was killed too: run.json stays "running"
    state = store.run_state(run_id)
    assert state["status"] == "interrupted" and "is no longer running" in state["error"]
    assert store.run_info(run_id)["status"] == "running"
