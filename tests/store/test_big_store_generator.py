"""scripts/make_big_store.py on a tiny size: the run it streams through the recording writer
child process reads back complete and finished, the child writes exactly what a writer in
this process writes, and bad sizes are refused before anything is created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from store import Store, epoch_metrics, run_summary, steps

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from make_big_store import CHUNK_ROWS, SyntheticDynamics, stream_big_run  # noqa: E402

SAMPLES, EPOCHS = 2_000, 3


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    root = tmp_path_factory.mktemp("big") / "store"
    return root, stream_big_run(root, SAMPLES, EPOCHS)


def test_streamed_run_is_finished_compacted_and_complete(streamed):
    root, report = streamed
    store = Store(root)
    info = store.run_info(report.run_id)
    assert (info["status"], info["compacted"], info["epochs_done"]) == ("finished", True, EPOCHS)
    run_dir = store.run_dir(report.run_id)
    assert not (run_dir / "presentations").exists()  # the segments went into the compacted file
    presentations = pq.read_table(run_dir / "presentations.parquet")
    assert presentations.num_rows == SAMPLES * EPOCHS == report.rows
    # sorted by (sample_id, epoch): every sample once per epoch
    sample_ids = presentations["sample_id"].to_numpy()
    assert np.array_equal(sample_ids, np.repeat(np.arange(SAMPLES), EPOCHS))
    assert np.array_equal(presentations["epoch"].to_numpy(), np.tile(np.arange(EPOCHS), SAMPLES))

    summary = run_summary(store, report.run_id)
    assert len(summary) == SAMPLES and (summary["presentations"] == EPOCHS).all()
    dynamics = SyntheticDynamics(SAMPLES, EPOCHS)
    assert np.array_equal(summary["label"].to_numpy(), dynamics.label)
    assert summary["label_noisy"].sum() == round(0.2 * SAMPLES)
    # flipped labels are learned late: far less often correct than clean ones
    noisy = summary["label_noisy"].to_numpy(bool)
    assert summary["correctness"][noisy].mean() < summary["correctness"][~noisy].mean() - 0.3

    metrics = epoch_metrics(store, report.run_id)
    assert list(metrics["epoch"]) == list(range(EPOCHS))
    for epoch in range(EPOCHS):  # the epoch row is the mean of what was presented
        expected = float(dynamics.epoch(epoch)["loss"].astype(np.float64).mean())
        assert metrics["train_loss"][epoch] == pytest.approx(expected, rel=1e-6)
    assert metrics["val_accuracy"].notna().all()
    assert len(steps(store, report.run_id)) == EPOCHS * dynamics.steps_per_epoch


def test_writer_child_writes_what_an_in_process_writer_writes(tmp_path, streamed):
    root, report = streamed
    here = stream_big_run(tmp_path / "store", SAMPLES, EPOCHS, in_process=True, finish=False)
    assert here.writer == "in-process"
    segments = sorted((Store(tmp_path / "store").run_dir(here.run_id) / "presentations").glob("part-*.parquet"))
    assert len(segments) == EPOCHS * -(-SAMPLES // CHUNK_ROWS)
    mine = pq.read_table(segments).sort_by([("sample_id", "ascending"), ("epoch", "ascending")])
    theirs = pq.read_table(Store(root).run_dir(report.run_id) / "presentations.parquet")
    for name in ("sample_id", "epoch", "step", "loss", "p_true", "correct", "pred", "margin", "weight"):
        assert np.array_equal(mine[name].to_numpy(), theirs[name].to_numpy()), name
    assert Store(tmp_path / "store").run_info(here.run_id)["status"] == "running"  # --no-finish


def test_bad_size_is_refused_in_one_line_and_creates_nothing(tmp_path):
    target = tmp_path / "store"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "make_big_store.py"), str(target),
                           "--samples", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("--samples and --epochs must be >= 1 and --label-noise in [0, 1)")
    assert not target.exists()
