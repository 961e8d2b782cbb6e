"""``trainmap train --task pydoc-lm --model gpt``: a real run through the command line that
records one row per sequence with its group, and whose validation loss beats the unigram
baseline."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from store import Store, epoch_metrics
from training.pydoc_lm import IGNORE_INDEX, load_pydoc_lm, topic_kind, unigram_bits

from tests.cli.test_cli import trainmap


def table(store: Store, run_id: str, name: str) -> pd.DataFrame:
    """A run's table as written, every column (``group_id`` too)."""
    return pd.concat([pd.read_parquet(path) for path in store.table_files(run_id, name)], ignore_index=True)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    store = tmp_path_factory.mktemp("lm") / "store"
    result = trainmap("train", "--task", "pydoc-lm", "--epochs", "1", "--name", "lm", "--no-progress",
                      "--grad-norm-every", "0", store=store)
    return Store(store), result.stdout.strip().splitlines()[-1].removeprefix("run_id: ")


@pytest.mark.slow
def test_the_run_records_one_row_per_sequence_with_its_group(lm_run):
    store, run_id = lm_run
    task = load_pydoc_lm()
    info = store.run_info(run_id)
    assert info["status"] == "finished" and info["output_kind"] == "sequence"
    assert info["task"] == "pydoc-lm" and info["model"] == "gpt"
    rows = table(store, run_id, "presentations").sort_values("sample_id").reset_index(drop=True)
    assert rows["sample_id"].tolist() == list(range(len(task.train)))  # each sequence once in the epoch
    np.testing.assert_array_equal(rows["token_count"], (task.train.y != IGNORE_INDEX).sum(1))
    assert rows["label"].isna().all() and rows["token_accuracy"].between(0, 1).all()
    groups = table(store, run_id, "groups")
    names = rows["group_id"].map(dict(zip(groups["group_id"], groups["group_name"])))
    assert names.tolist() == [topic_kind(topic) for topic in task.train.topics]
    assert store.dataset_path("pydoc-lm").exists()


@pytest.mark.slow
def test_validation_bits_per_byte_beat_the_unigram_baseline(lm_run):
    store, run_id = lm_run
    task = load_pydoc_lm()
    val = epoch_metrics(store, run_id).iloc[-1]
    bits = val["val_loss"] / math.log(2)  # token-mean cross-entropy in nats -> bits per byte
    baseline = unigram_bits(task.train, task.val)
    assert bits < baseline - 0.5, (bits, baseline)


def test_a_model_that_does_not_fit_the_task_is_refused_before_training(tmp_path):
    result = trainmap("train", "--task", "pydoc-lm", "--model", "cnn", check=False, store=tmp_path / "s")
    assert result.returncode != 0 and "model 'cnn' does not fit task 'pydoc-lm'; use --model gpt" in result.stderr
    result = trainmap("train", "--task", "pydoc-lm", "--label-noise", "0.1", check=False, store=tmp_path / "s")
    assert result.returncode != 0 and "task 'pydoc-lm' has none" in result.stderr
    assert not (tmp_path / "s").exists()
