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
import pandas as pd
import pytest

from store import Store, StoreError
from store.queries import dynamics, epoch_metrics, steps
from store.recording.messages import Configure, EpochTotals, RecordEpoch, RecordPresentations, StepBuffers
from store.recording.process import WriterProcess

ROOT = Path(__file__).resolve().parents[2]


def chunk_columns(n: int, classes: int = 10, steps_per_epoch: int = 4, first_step: int = 0) -> dict[str, np.ndarray]:
    """One epoch's presentations as the recorder hands them over (statistics reduced)."""
    rng = np.random.default_rng(n + first_step)
    return {
        "step": np.repeat(np.arange(first_step, first_step + steps_per_epoch), n // steps_per_epoch),
        "sample_id": rng.permutation(n),
        "label": rng.integers(0, classes, n).astype(np.int32),
        "loss": rng.random(n).astype(np.float32),
        "p_true": rng.random(n).astype(np.float32),
        "correct": rng.random(n) > 0.5,
        "pred": rng.integers(0, classes, n).astype(np.int32),
    }


def step_buffers(steps_per_epoch: int = 4, first_step: int = 0) -> StepBuffers:
    rng = np.random.default_rng(first_step)
    step_numbers = list(range(first_step, first_step + steps_per_epoch))
    return StepBuffers(
        step_numbers=step_numbers, step_losses=rng.random(steps_per_epoch).astype(np.float32),
        grad_norm_steps=step_numbers, parameter_norms=rng.random((steps_per_epoch, 2)),
        lr_steps=step_numbers, lrs=[0.1] * steps_per_epoch,
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
    writer.send(RecordPresentations(epoch=epoch, rank=0, chunk=0, columns=chunk_columns(n, first_step=4 * epoch)))
    totals = EpochTotals(loss_sum=float(n) / 2, correct_sum=float(n) / 2, count=float(n))
    writer.send(RecordEpoch(epoch=epoch, steps=step_buffers(first_step=4 * epoch), totals=totals, time=now))


def test_an_epoch_handed_over_is_written(tmp_path):
    store, run_id = new_run(tmp_path)
    writer = start(store, run_id, flush_secs=0)
    record(writer, 0)  # 4,000 presentations: well over the pipe limit, so through a spool file
    record(writer, 1)
    spool = writer._spool
    writer.close()
    rows = dynamics(store, run_id)
    assert len(rows) == 8000
    assert sorted(rows.loc[rows.epoch == 1, "sample_id"]) == list(range(4000))
    sent = pd.DataFrame(chunk_columns(4000, first_step=4)).set_index("sample_id")
    got = rows[rows.epoch == 1].set_index("sample_id").loc[sent.index]
    for name in ("step", "label", "loss", "p_true", "correct", "pred"):
        np.testing.assert_array_equal(got[name].to_numpy(), sent[name].to_numpy(), err_msg=name)
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
