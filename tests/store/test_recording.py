"""The recorder's writer process (store.recording.process): hand-over, errors, and what it
keeps when the training process goes away."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from store import Store, StoreError
from store.queries import dynamics, epoch_metrics, steps
from store.recording.messages import Configure, EpochBuffers, RecordEpoch
from store.recording.process import WriterProcess

ROOT = Path(__file__).resolve().parents[2]


def epoch_buffers(n: int, classes: int = 10, steps_per_epoch: int = 4, first_step: int = 0) -> EpochBuffers:
    rng = np.random.default_rng(n)
    sizes = [n // steps_per_epoch] * steps_per_epoch
    step_numbers = list(range(first_step, first_step + steps_per_epoch))
    return EpochBuffers(
        logits=rng.normal(size=(n, classes)).astype(np.float32),
        targets=rng.integers(0, classes, n),
        sample_ids=rng.permutation(n),
        batch_steps=step_numbers,
        batch_sizes=sizes,
        step_numbers=step_numbers,
        step_losses=rng.random(steps_per_epoch).astype(np.float32),
        grad_norm_steps=step_numbers,
        parameter_norms=rng.random((steps_per_epoch, 2)),
        lr_steps=step_numbers,
        lrs=[0.1] * steps_per_epoch,
        weights=None,
        feature_sqnorms=None,
    )


def start(store: Store, run_id: str, flush_secs: float) -> WriterProcess:
    writer = WriterProcess()
    writer.start(Configure(
        store_path=str(store.root), run_id=run_id, layers=("fc",), layer_owner=np.array([0, 0]), flush_secs=flush_secs
    ))
    return writer


def new_run(tmp_path: Path) -> tuple[Store, str]:
    store = Store(tmp_path / "store", create=True)
    return store, store.create_run(name="w", task="custom", model="m", seed=0, config={})


def record(writer: WriterProcess, epoch: int, n: int = 4000) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    buffers = epoch_buffers(n, first_step=4 * epoch)
    writer.send(RecordEpoch(epoch=epoch, rank=0, is_global_zero=True, buffers=buffers, time=now))


def test_an_epoch_handed_over_is_scored_and_written(tmp_path):
    store, run_id = new_run(tmp_path)
    writer = start(store, run_id, flush_secs=0)
    record(writer, 0)  # 4,000 presentations: well over the pipe limit, so through a spool file
    record(writer, 1)
    spool = writer._spool
    writer.close()
    rows = dynamics(store, run_id)
    assert len(rows) == 8000
    assert sorted(rows.loc[rows.epoch == 1, "sample_id"]) == list(range(4000))
    buffers = epoch_buffers(4000, first_step=4)
    expected = -np.log(np.exp(buffers.logits) / np.exp(buffers.logits).sum(1, keepdims=True))[
        np.arange(4000), buffers.targets
    ]
    got = rows[rows.epoch == 1].set_index("sample_id").loc[buffers.sample_ids, "loss"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert list(steps(store, run_id)["step"]) == list(range(8))
    assert store.run_info(run_id)["epochs_done"] == 2
    assert not spool.exists()  # payload files are removed
    assert store.run_info(run_id)["status"] == "running"  # an orderly close leaves it to the trainer


def test_an_error_in_the_writer_is_raised_at_the_next_drain(tmp_path):
    store, run_id = new_run(tmp_path)
    writer = start(store, "no-such-run", flush_secs=0)
    record(writer, 0)  # fails in the child: the run does not exist
    with pytest.raises(StoreError, match="recording writer failed: RunNotFoundError: no run 'no-such-run'"):
        writer.drain()
    writer.drain()  # reported once; the child goes on
    writer.close()
    assert not store.run_dir(run_id).joinpath("presentations").exists()


def test_a_writer_that_died_is_reported_not_waited_for(tmp_path):
    store, run_id = new_run(tmp_path)
    writer = start(store, run_id, flush_secs=0)
    writer._process.kill()
    writer._process.wait()
    with pytest.raises(StoreError, match="recording writer process ended unexpectedly"):
        record(writer, 0)
        writer.drain()
    writer.close()


def test_the_writer_ignores_ctrl_c(tmp_path):
    # Ctrl-C in a terminal reaches the whole process group: the training process handles
    # it (Lightning's on_exception flushes), the writer must live to write those rows.
    store, run_id = new_run(tmp_path)
    writer = start(store, run_id, flush_secs=0)
    writer.drain()  # the child has installed its handlers
    os.kill(writer._process.pid, signal.SIGINT)
    record(writer, 0)
    writer.close()
    assert len(dynamics(store, run_id)) == 4000


def test_what_was_handed_over_is_written_after_the_training_process_is_killed(tmp_path):
    store, run_id = new_run(tmp_path)
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path[:0] = [{str(ROOT)!r}, {str(Path(__file__).parent)!r}]
        from store import Store
        from test_recording import record, start
        Store({str(store.root)!r}).update_run({run_id!r}, pid=os.getpid())  # as create_run does
        writer = start(Store({str(store.root)!r}), {run_id!r}, flush_secs=3600)
        record(writer, 0)
        record(writer, 1)  # the small tables of both epochs are only queued (flush_secs)
        print(writer._process.pid, os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    child, parent_pid = (int(word) for word in parent.stdout.split()[:2])
    deadline = time.monotonic() + 60
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)
    assert len(dynamics(store, run_id)) == 8000
    assert list(steps(store, run_id)["step"]) == list(range(8))
    assert list(epoch_metrics(store, run_id)["epoch"]) == [0, 1]
    info = store.run_info(run_id)
    assert info["epochs_done"] == 2
    # and the run no longer claims to be running
    assert info["status"] == "failed" and info["finished_at"], (info, parent.stderr)
    assert f"the training process (pid {parent_pid}) ended without finishing the run" in info["error"]
    assert "the 2 epoch(s) it recorded are kept" in info["error"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, parent gone, not yet reaped by init) counts as ended
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_the_writer_process_imports_no_heavy_libraries(tmp_path):
    # It starts while the first epoch trains, on the same cores: pandas, DuckDB and torch
    # would triple its start-up CPU (store/__init__.py imports them lazily). This runs the
    # child's real entry point, which ends at once on an empty stdin.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "store.recording", str(tmp_path / "spool"), "0"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert {"store.recording.process", "store.recording.writer", "store.layout"} <= imported
    heavy = {"torch", "lightning", "pandas", "duckdb", "streamlit"}
    assert sorted(name for name in imported if name.split(".")[0] in heavy) == []
