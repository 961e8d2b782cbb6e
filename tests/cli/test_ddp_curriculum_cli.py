"""Curricula under `trainmap train --devices 2 --strategy ddp` (two CPU processes, gloo on
loopback): every rank draws the same global epoch and takes its share, so the samples of an
epoch are the curriculum's pool, each presented once over the ranks (the one padding
duplicate aside), and an online rule plans from the losses of every rank."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from store import Store, dynamics
from store.curriculum import load_curriculum

pytest.importorskip("lightning")
REPO = Path(__file__).resolve().parents[2]
NUM_TRAIN = 1437  # digits: 80 % of 1,797


def trainmap(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True,
                            cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def run_id_of(stdout: str) -> str:
    return stdout.strip().splitlines()[-1].removeprefix("run_id: ")


def raw_presentations(store: Path, run_id: str) -> pd.DataFrame:
    """The finished run's rows with the rank that wrote each (compaction keeps one copy of a
    sample two ranks presented in one epoch)."""
    return pd.read_parquet(Store(store).run_dir(run_id) / "presentations.parquet")


def trained_per_epoch(store: Path, run_id: str) -> pd.Series:
    """Presentations the ranks trained on per epoch, summed over ranks before any copy is
    dropped (the epoch table's train totals)."""
    epochs = pd.read_parquet(Store(store).run_dir(run_id) / "epochs.parquet")
    return epochs[epochs["split"] == "train"].set_index("epoch")["num_samples"]


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    store = tmp_path_factory.mktemp("ddp-curricula") / "store"
    out = trainmap("train", "--task", "digits", "--model", "mlp", "--epochs", "2", "--no-progress",
                   "--store", str(store))
    return store, run_id_of(out)


@pytest.mark.slow
def test_a_pruned_curriculum_under_ddp_presents_its_pool_once_per_epoch(parent, tmp_path):
    store, parent_id = parent
    path = tmp_path / "easy.parquet"
    trainmap("curriculum", "--run", parent_id, "--score", "loss", "--strategy", "keep-easy", "--keep", "0.5",
             "-o", str(path), "--store", str(store))
    kept = set(load_curriculum(path).table.query("weight > 0")["sample_id"])
    assert 0 < len(kept) < NUM_TRAIN
    out = trainmap("train", "--task", "digits", "--model", "mlp", "--epochs", "2", "--devices", "2",
                   "--strategy", "ddp", "--curriculum", str(path), "--no-progress", "--store", str(store))
    run_id = run_id_of(out)
    info = Store(store).run_info(run_id)
    assert info["status"] == "finished" and info["world_size"] == 2 and info["parent_run_id"] == parent_id
    rows = dynamics(Store(store), run_id)
    for epoch in (0, 1):
        presented = rows.loc[rows["epoch"] == epoch, "sample_id"]
        assert set(presented) == kept and presented.is_unique  # the pool, each sample once
    raw = raw_presentations(store, run_id)
    # both ranks trained, on disjoint shares of the same epoch (the padding draw is trained
    # on but not recorded, so the shares sum to the pool)
    per_rank = raw.groupby(["epoch", "rank"]).size().unstack()
    assert (per_rank.sum(axis=1) == len(kept)).all() and (per_rank.min(axis=1) >= len(kept) // 2).all()
    # what the ranks trained on: the pool, plus one padding draw when it is odd
    assert trained_per_epoch(store, run_id).tolist() == [len(kept) + len(kept) % 2] * 2


@pytest.mark.slow
def test_infobatch_under_ddp_plans_one_pool_for_both_ranks(parent, tmp_path):
    store, parent_id = parent
    path = tmp_path / "infobatch.parquet"
    trainmap("curriculum", "--run", parent_id, "--strategy", "infobatch", "--prune-ratio", "0.5",
             "-o", str(path), "--store", str(store))
    out = trainmap("train", "--task", "digits", "--model", "mlp", "--epochs", "3", "--devices", "2",
                   "--strategy", "ddp", "--curriculum", str(path), "--no-progress", "--store", str(store))
    run_id = run_id_of(out)
    assert Store(store).run_info(run_id)["status"] == "finished"
    rows = dynamics(Store(store), run_id)
    sizes = rows.groupby("epoch")["sample_id"].nunique()
    # epoch 0 knows no loss yet: everything; later epochs drop part of the well-learned samples
    assert sizes[0] == NUM_TRAIN and (sizes.loc[1:] < NUM_TRAIN).all()
    # one pool shared out: the ranks trained on the pool plus at most one padding draw (ranks
    # planning from their own losses would pick different pools, overlapping and missing)
    trained = trained_per_epoch(store, run_id)
    assert ((trained - sizes) == sizes % 2).all(), (trained, sizes)
    raw = raw_presentations(store, run_id)
    for epoch, part in raw.groupby("epoch"):
        counts = part.groupby("rank").size()
        assert sorted(counts.index) == [0, 1] and abs(counts[0] - counts[1]) <= 1
    # the kept low-loss samples train with InfoBatch's 1 / (1 - r) rescaling
    assert set(rows.loc[rows["epoch"] > 0, "weight"].round(6)) <= {1.0, 2.0}


@pytest.mark.slow
def test_a_curriculum_that_repeats_samples_keeps_every_presentation_under_ddp(parent, tmp_path):
    """--keep-steps draws a pruned pool as often as the whole dataset: the epoch repeats
    samples, and a sample drawn on both ranks keeps both presentations (only the padding
    draw is left out, by the recorder), as one process records it."""
    store, parent_id = parent
    path = tmp_path / "easy.parquet"
    trainmap("curriculum", "--run", parent_id, "--score", "loss", "--strategy", "keep-easy", "--keep", "0.5",
             "-o", str(path), "--store", str(store))
    kept = set(load_curriculum(path).table.query("weight > 0")["sample_id"])
    out = trainmap("train", "--task", "digits", "--model", "mlp", "--epochs", "2", "--devices", "2",
                   "--strategy", "ddp", "--curriculum", str(path), "--keep-steps", "--no-progress",
                   "--store", str(store))
    run_id = run_id_of(out)
    info = Store(store).run_info(run_id)
    assert info["status"] == "finished" and info["padding_dropped"] is True
    rows = dynamics(Store(store), run_id)
    raw = raw_presentations(store, run_id)
    for epoch in (0, 1):
        presented = rows.loc[rows["epoch"] == epoch, "sample_id"]
        assert len(presented) == NUM_TRAIN and set(presented) <= kept  # the single-process epoch's draws
        assert presented.value_counts().max() > 1
        ranks = raw[raw["epoch"] == epoch].groupby("sample_id")["rank"].nunique()
        assert (ranks == 2).any()  # drawn on both ranks in one epoch: both rows kept
    assert trained_per_epoch(store, run_id).tolist() == [NUM_TRAIN + NUM_TRAIN % 2] * 2  # + the padding draw
