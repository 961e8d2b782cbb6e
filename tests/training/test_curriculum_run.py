"""Training with curriculum files: the sampler, real short reruns, lineage, keep-steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from store import Store, dynamics, run_summary, steps
from store.curriculum import Curriculum, build_curriculum, class_accuracy, load_curriculum, save_curriculum
from training.curriculum_run import CurriculumSampler, sow_hook

REPO = Path(__file__).resolve().parents[2]


def test_sampler_from_file_in_a_plain_pytorch_loop(tmp_path):
    # samples 0-3 from epoch 0, 4-7 from epoch 1, 8-9 pruned
    pd.DataFrame({
        "sample_id": np.arange(10),
        "weight": [1.0] * 8 + [0.0] * 2,
        "start_epoch": [0, 0, 0, 0, 1, 1, 1, 1, 0, 0],
    }).to_csv(tmp_path / "paced.csv", index=False)
    dataset = TensorDataset(torch.arange(10).float()[:, None], torch.arange(10))
    sampler = CurriculumSampler.from_file(tmp_path / "paced.csv", dataset_size=10)
    loader = DataLoader(dataset, batch_size=3, sampler=sampler)
    model = torch.nn.Linear(1, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[list[int]] = []
    for _ in range(3):  # no set_epoch: each pass is the next epoch
        ids: list[int] = []
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ids += y.tolist()
        seen.append(ids)
    # pacing keeps the full data's epoch length, drawing from the available pool
    assert [len(ids) for ids in seen] == [10, 10, 10]
    assert set(seen[0]) == {0, 1, 2, 3}
    assert set(seen[1]) == set(seen[2]) == set(range(8))
    sampler.set_epoch(0)
    assert set(sampler) == {0, 1, 2, 3}
    # a pruning file: epoch length = kept count, or the full size with keep_steps
    pd.DataFrame({"sample_id": [1, 3, 5], "weight": [1.0, 2.0, 0.5]}).to_csv(tmp_path / "pruned.csv", index=False)
    pruned = CurriculumSampler.from_file(tmp_path / "pruned.csv", dataset_size=10)
    assert len(pruned) == 3 and sorted(pruned) == [1, 3, 5]
    steps_kept = CurriculumSampler.from_file(tmp_path / "pruned.csv", dataset_size=10, keep_steps=True)
    drawn = list(steps_kept)
    assert len(drawn) == 10 and set(drawn) == {1, 3, 5}
    assert sorted(drawn.count(i) for i in (1, 3, 5)) == [3, 3, 4]


def test_sow_hook_scales_softmax_by_batch_size():
    hook = sow_hook("linear-upper", 1.0, 1.0)
    weights = hook(torch.arange(3), torch.tensor([0.0, 1.0, 2.0]))
    z = np.exp([-1.0, 0.0, 1.0])
    np.testing.assert_allclose(weights.numpy(), 3 * z / z.sum(), rtol=1e-6)
    assert float(weights.sum()) == pytest.approx(3.0)


def _attach_online(tmp_path, rule: str, params: dict):
    """attach_curriculum on a 6-sample dataset whose file names ``rule`` with ``params`` only."""
    from types import SimpleNamespace

    from training.curriculum_run import attach_curriculum

    table = pd.DataFrame({"sample_id": np.arange(6), "weight": np.ones(6)})
    path = save_curriculum(Curriculum(table, {"online": {"rule": rule, "params": params}}), tmp_path / f"{rule}.parquet")
    dataset = SimpleNamespace(sample_ids=torch.arange(6), weights=torch.ones(6))
    config = SimpleNamespace(curriculum=str(path), seed=0, epochs=8, keep_steps=False)
    return attach_curriculum(config, dataset, task_name="mnist1d", batch_size=3), dataset


def test_online_rules_train_with_the_registry_defaults(tmp_path):
    from store.curriculum import STRATEGIES, available_count, infobatch_plan, sow_weights

    losses = torch.tensor([0.1, 0.2, 0.3, 1.4, 0.2, 0.9])
    attachment, _ = _attach_online(tmp_path, "loss-reweight", {})
    weights = attachment.module_kwargs["online_weights"](torch.arange(6), losses)
    expected = sow_weights(losses.numpy(), **STRATEGIES["loss-reweight"].defaults) * 6
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)
    attachment, _ = _attach_online(tmp_path, "loss-reweight", {"tau": 0.25})
    weights = attachment.module_kwargs["online_weights"](torch.arange(6), losses)
    expected = sow_weights(losses.numpy(), **{**STRATEGIES["loss-reweight"].defaults, "tau": 0.25}) * 6
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)

    attachment, dataset = _attach_online(tmp_path, "infobatch", {})
    attachment.module_kwargs["on_batch_losses"](torch.arange(6), losses)
    mask = attachment.sampler.plan(2)
    keep, factor, _ = infobatch_plan(losses.numpy(), 2, 8, **STRATEGIES["infobatch"].defaults,
                                     rng=np.random.default_rng([0, 7919, 2]))
    np.testing.assert_array_equal(mask, keep)
    np.testing.assert_allclose(dataset.weights.numpy(), np.where(keep, factor, 1.0))
    assert attachment.sampler.plan(7).all()  # delta 0.875 of 8 epochs: full data from epoch 7

    attachment, _ = _attach_online(tmp_path, "self-paced", {"r0": 0.5})
    attachment.module_kwargs["on_batch_losses"](torch.arange(6), losses)
    pacing = {**STRATEGIES["self-paced"].defaults, "r0": 0.5}
    for epoch in (0, 4, 10):
        mask = attachment.sampler.plan(epoch)
        assert mask.sum() == available_count(epoch, 6, **pacing)
        assert set(np.flatnonzero(mask)) == set(np.argsort(losses.numpy(), kind="stable")[: mask.sum()])


# -- real short runs -------------------------------------------------------------------------


def _train(store_path: Path, **overrides) -> str:
    from training.run import TrainConfig, train

    config = dict(task="mnist1d", model="mlp", epochs=2, seed=0, label_noise=0.2, store=str(store_path), progress=False)
    config.update(overrides)
    return train(TrainConfig(**config))


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    store_path = tmp_path_factory.mktemp("cur") / "store"
    return store_path, _train(store_path)


@pytest.mark.slow
def test_rerun_presents_only_kept_samples_with_their_weights(parent, tmp_path):
    store_path, parent_id = parent
    store = Store(store_path)
    summary = run_summary(store, parent_id)
    curriculum = build_curriculum(summary, "keep-easy", "loss", keep=0.5, task="mnist1d", source_runs=[parent_id])
    kept = curriculum.table["weight"] > 0
    # kept samples alternate weight 0.5 / 2.0
    curriculum.table.loc[kept, "weight"] = np.where(np.arange(kept.sum()) % 2 == 0, 0.5, 2.0)
    path = save_curriculum(curriculum, tmp_path / "half.parquet")
    rerun = _train(store_path, curriculum=str(path))
    info = store.run_info(rerun)
    assert info["status"] == "finished"
    assert info["parent_run_id"] == parent_id
    assert info["curriculum"].startswith("half.parquet: keep-easy loss keep=0.5")
    presented = dynamics(store, rerun)
    expected = curriculum.table.loc[kept].set_index("sample_id")["weight"]
    for epoch in (0, 1):
        epoch_rows = presented[presented["epoch"] == epoch]
        assert sorted(epoch_rows["sample_id"]) == sorted(expected.index)  # each kept sample once
    np.testing.assert_allclose(presented["weight"], expected.reindex(presented["sample_id"]).to_numpy())
    # per-class validation accuracy: 10 classes, 1000 validation samples per epoch
    per_class = class_accuracy(store, rerun)
    assert sorted(per_class["epoch"].unique()) == [0, 1]
    assert per_class.groupby("epoch")["num_samples"].sum().tolist() == [1000, 1000]
    assert per_class["label"].nunique() == 10 and per_class["accuracy"].between(0, 1).all()


@pytest.mark.slow
def test_keep_steps_gives_the_parents_step_count(parent, tmp_path):
    store_path, parent_id = parent
    store = Store(store_path)
    summary = run_summary(store, parent_id)
    path = save_curriculum(
        build_curriculum(summary, "random", keep=0.3, task="mnist1d", source_runs=[parent_id]), tmp_path / "r.csv"
    )
    pruned = _train(store_path, curriculum=str(path))
    kept_steps = _train(store_path, curriculum=str(path), keep_steps=True)
    per_epoch = {run: steps(store, run).groupby("epoch").size().tolist() for run in (parent_id, pruned, kept_steps)}
    assert per_epoch[parent_id] == [63, 63]  # 4000 samples / batch 64
    assert per_epoch[pruned] == [19, 19]  # 1200 kept
    assert per_epoch[kept_steps] == per_epoch[parent_id]
    presented = dynamics(store, kept_steps)
    # each epoch draws 4000 presentations from the 1200 kept, and every one is recorded
    # (only DDP padding across ranks is de-duplicated)
    assert presented["sample_id"].nunique() == 1200 and len(presented) == 2 * 4000
    assert presented.groupby("epoch").size().tolist() == [4000, 4000]


@pytest.mark.slow
def test_infobatch_rerun_drops_below_mean_samples(parent, tmp_path):
    store_path, parent_id = parent
    store = Store(store_path)
    summary = run_summary(store, parent_id)
    path = save_curriculum(
        build_curriculum(summary, "infobatch", prune_ratio=0.5, task="mnist1d", source_runs=[parent_id]),
        tmp_path / "ib.parquet",
    )
    rerun = _train(store_path, curriculum=str(path), epochs=3)  # delta 0.875 * 3: epochs 0-2 pruned, 0 full
    presented = dynamics(store, rerun)
    counts = presented.groupby("epoch").size().tolist()
    assert counts[0] == 4000 and 2000 < counts[1] < 3800 and 2000 < counts[2] < 3800
    later = presented[presented["epoch"] >= 1]
    assert set(np.round(later["weight"].unique(), 6)) == {1.0, 2.0}  # kept low-loss ones get 1/(1-r)
    assert store.run_info(rerun)["epochs_done"] == 3
    per_epoch_steps = steps(store, rerun).groupby("epoch").size().tolist()
    assert per_epoch_steps[0] == 63 and per_epoch_steps[1] < 63


@pytest.mark.slow
def test_loss_reweight_records_the_weight_each_presentation_was_trained_with(parent, tmp_path):
    store_path, parent_id = parent
    store = Store(store_path)
    path = save_curriculum(
        build_curriculum(run_summary(store, parent_id), "loss-reweight", g="quadratic", tau=0.5,
                         task="mnist1d", source_runs=[parent_id]),
        tmp_path / "lr.parquet",
    )
    rerun = _train(store_path, curriculum=str(path), epochs=1)
    presented = dynamics(store, rerun)
    assert len(presented) == 4000
    # batch_size * softmax(...): not all 1, every full batch's weights average exactly 1
    assert presented["weight"].std() > 0.01
    per_step = presented.groupby("step")["weight"].agg(["mean", "size"])
    full = per_step[per_step["size"] == 64]
    np.testing.assert_allclose(full["mean"], 1.0, rtol=1e-5)


@pytest.mark.slow
def test_train_with_a_bad_curriculum_is_one_line_and_changes_nothing(parent, tmp_path):
    store_path, parent_id = parent
    bad = tmp_path / "bad.csv"
    bad.write_text("sample_id,weight\n0,1\n5000,1\n")
    before = {str(p): p.stat().st_mtime_ns for p in store_path.rglob("*")}
    result = subprocess.run(
        [sys.executable, "-m", "training.cli", "train", "--task", "mnist1d", "--model", "mlp", "--epochs", "1",
         "--curriculum", str(bad), "--store", str(store_path), "--no-progress"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("trainmap: error: ") and "sample_id(s) not in the dataset" in lines[-1]
    assert "Traceback" not in result.stderr
    assert {str(p): p.stat().st_mtime_ns for p in store_path.rglob("*")} == before
