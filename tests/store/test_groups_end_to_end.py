"""Groups end to end: a tiny real LightningModule whose batches are dicts with a ``group``
list of strings, recorded by ``DynamicsRecorder``; the per-group aggregates against pandas
from the written Parquet; a group-weights curriculum built by ``trainmap curriculum`` and a
rerun on it that trains with those weights and records the groups again."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")

from store import Store, sample_summary  # noqa: E402
from store.groups import group_names, group_scores, group_step_loss  # noqa: E402

GROUPS = ("alpha", "beta", "gamma")
NUM_SAMPLES = 36


class GroupedDataset(torch.utils.data.Dataset):
    """Dict items with a group name; ``weights`` replaced by a curriculum, as the built-in datasets."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.x = torch.as_tensor(rng.normal(size=(NUM_SAMPLES, 5)), dtype=torch.float32)
        self.y = (self.x[:, 0] > 0).long() + 2 * (self.x[:, 1] > 0).long()
        self.sample_ids = torch.arange(NUM_SAMPLES) * 5 + 7  # ids that are not positions
        self.groups = [GROUPS[i % 3] for i in range(NUM_SAMPLES)]
        self.weights = torch.ones(NUM_SAMPLES)

    def __len__(self) -> int:
        return NUM_SAMPLES

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "sample_id": self.sample_ids[i], "weight": self.weights[i],
                "group": self.groups[i]}


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        logits = self.net(batch["x"])
        losses = torch.nn.functional.cross_entropy(logits, batch["y"], reduction="none")
        return {"loss": (batch["weight"] * losses).mean(), "logits": logits, "weight": batch["weight"]}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(store_path, dataset, sampler=None, **recorder_kwargs) -> str:
    from training import DynamicsRecorder

    recorder = DynamicsRecorder(store_path, run_name="grouped", task="grouped", **recorder_kwargs)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=sampler is None, sampler=sampler,
                                         generator=torch.Generator().manual_seed(0) if sampler is None else None)
    L.Trainer(max_epochs=3, accelerator="cpu", devices=1, callbacks=[recorder], logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              num_sanity_val_steps=0).fit(Tiny(), loader)
    return recorder.run_id


def presentations(store: Store, run_id: str) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(path) for path in store.table_files(run_id, "presentations")])


@pytest.mark.slow
def test_groups_are_recorded_aggregated_weighted_and_recorded_again(tmp_path, capsys):
    from training.cli.main import main
    from training.curriculum_run import attach_curriculum
    from training.groups import group_id

    dataset = GroupedDataset()
    store = Store(tmp_path / "store")
    run_id = fit(store.root, dataset)
    names = group_names(store, run_id)
    assert names.set_index("group")["group_id"].to_dict() == {name: group_id(name) for name in GROUPS}

    rows = presentations(store, run_id)
    group_of = dict(zip(dataset.sample_ids.tolist(), dataset.groups))
    assert (rows["group_id"] == rows["sample_id"].map(group_of).map(group_id)).all()
    rows["group"] = rows["sample_id"].map(group_of)
    per_sample = rows.groupby("sample_id").agg(loss=("loss", "mean"), group=("group", "first"),
                                               correctness=("correct", "mean"))
    scores = group_scores(store, run_id).set_index("group")
    np.testing.assert_allclose(scores["loss"], per_sample.groupby("group")["loss"].mean(), rtol=1e-6)
    np.testing.assert_allclose(scores["correctness"], per_sample.groupby("group")["correctness"].mean())
    assert scores["samples"].tolist() == [12, 12, 12]
    steps = group_step_loss(store, run_id).set_index(["group", "step"])["loss"]
    np.testing.assert_allclose(steps, rows.groupby(["group", "step"])["loss"].mean().loc[steps.index], rtol=1e-6)

    out = tmp_path / "weights.parquet"
    assert main(["curriculum", "--run", run_id, "--strategy", "group-weights", "--group-weights",
                 "alpha=2,gamma=0", "-o", str(out), "--store", str(store.root)]) == 0
    assert "weight per group: alpha 2 (12 samples), beta 1 (12 samples), gamma 0 (12 samples)" in (
        capsys.readouterr().err)

    class Config:
        curriculum, seed, epochs, keep_steps = str(out), 0, 3, False

    rerun_data = GroupedDataset()
    attachment = attach_curriculum(Config(), rerun_data, task_name="grouped", batch_size=8)
    rerun_id = fit(store.root, rerun_data, attachment.sampler, parent_run_id=attachment.parent_run_id,
                   curriculum=attachment.curriculum_label)
    rerun = presentations(store, rerun_id)
    rerun["group"] = rerun["sample_id"].map(group_of)
    assert set(rerun["group"]) == {"alpha", "beta"}  # gamma weighs 0: never drawn
    assert (rerun["weight"] == rerun["group"].map({"alpha": 2.0, "beta": 1.0})).all()
    assert (rerun["group_id"] == rerun["group"].map(group_id)).all()
    info = store.run_info(rerun_id)
    assert info["parent_run_id"] == run_id and "group_weights={alpha: 2, gamma: 0}" in info["curriculum"]
    assert group_scores(store, rerun_id)["group"].tolist() == ["alpha", "beta"]
    assert sample_summary(store, rerun_id)["group_id"].notna().sum() == 24
